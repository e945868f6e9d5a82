/**
 * The benchmark: @idempotency/express side by side with express-idempotency and @node-idempotency/core in one
 * run, over real HTTP on loopback. Checks every library's wiring, runs the concurrent-duplicates scenario,
 * then measures each (library, store, scenario) on a fresh server process, the rounds interleaved so that
 * background load affects every library alike. Prints a markdown report; a full run also writes it to
 * results/latest.md.
 *
 *   pnpm --filter @idempotency/bench bench            # full run, a few minutes
 *   pnpm --filter @idempotency/bench bench --quick    # smoke run (checks + 1 s of load per case), ~30 s
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem, type } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { renderChart } from "./chart.js";
import { freshSqlitePath, type RunningServer, startServer } from "./child.js";
import { isBaseline, type ServerConfig, TARGETS, type Target, targetName } from "./config.js";
import { type DuplicatesReport, runDuplicates } from "./duplicates.js";
import { closeClient, executions, postOrder } from "./http.js";
import { type LoadOptions, type LoadResult, runLoad, type StoreProbe } from "./load.js";
import { type BenchRedis, startRedis } from "./redis.js";
import { type Environment, type Measurement, renderReport, type Scenario } from "./report.js";
import { redisCommandCalls, redisUsedMemory, sqliteBytesPerRecord } from "./store-cost.js";
import { replay, verifyWiring, WiringError, type WiringReport } from "./verify.js";

const USAGE = `Usage: pnpm --filter @idempotency/bench bench [options]
  --quick              smoke run: wiring checks, duplicates, 1 s of load per case on the checked server,
                       no warm-up; proves the benchmark works, its numbers are not for comparison; no file
  --rounds N           interleaved rounds (default 3)
  --duration S         seconds measured per run (default 6)
  --warmup S           seconds of warm-up per run (default 2)
  --connections N      concurrent connections (default 50)
  --stores LIST        comma-separated: memory,redis,sqlite,postgres,mongodb (default all; mongodb only with
                       MONGODB_URL)
  --out FILE           where to write the report (default results/latest.md, or none with --quick)
  Set REDIS_URL to use an existing Redis instead of a private redis-server; the PostgreSQL rows use
  DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), a fresh table per run.
  Set MONGODB_URL (and MONGODB_WRITE_CONCERN=1 for a standalone server) to measure MongoStore.`;

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    connections: { type: "string" },
    stores: { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

function numberArg(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) throw new Error(`--${name} expects a number, got "${value}"`);
  return parsed;
}

const quick = args.quick;
const rounds = Math.max(1, Math.round(numberArg("rounds", args.rounds, quick ? 1 : 3)));
const load: LoadOptions = {
  connections: Math.max(1, Math.round(numberArg("connections", args.connections, 50))),
  duration: numberArg("duration", args.duration, quick ? 1 : 6),
  warmup: numberArg("warmup", args.warmup, quick ? 0 : 2),
};
const stores = new Set(
  (args.stores ?? "memory,redis,sqlite,postgres,mongodb").split(",").map((s) => s.trim()),
);
for (const store of stores) {
  if (!["memory", "redis", "sqlite", "postgres", "mongodb"].includes(store)) {
    throw new Error(`--stores: unknown store "${store}"`);
  }
}
const mongodbUrl = process.env.MONGODB_URL || undefined;
if (stores.has("mongodb") && mongodbUrl === undefined) {
  // No MongoDB server can be started here: the MongoDB rows need one you run.
  process.stderr.write(
    "MongoDB bench skipped: set MONGODB_URL=mongodb://127.0.0.1:27017 to measure MongoStore\n",
  );
  stores.delete("mongodb");
}
const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const targets = TARGETS.filter((t) => t.store === "none" || stores.has(t.store));
if (load.duration <= 0) throw new Error("--duration must be above 0 seconds");
const outFile = args.out ?? (quick ? undefined : new URL("../results/latest.md", import.meta.url).pathname);

const DUPLICATE_HANDLER_DELAY_MS = 50;
const runTag = `${Date.now().toString(36)}`;
let tagSequence = 0;
const nextTag = () => `${runTag}-${++tagSequence}`;

const log = (line: string) => process.stderr.write(`${line}\n`);

const sqliteDir = mkdtempSync(join(tmpdir(), "idempotency-bench-"));
let redis: BenchRedis | undefined;

/** The store counters around one measured load: Redis commands and memory, SQLite record bytes. */
function storeProbe(
  target: Target,
  scenario: Scenario,
  sqlitePath: string | undefined,
): StoreProbe | undefined {
  const admin = redis?.admin;
  if (target.store === "redis" && admin) {
    let calls = { all: 0, scripts: 0 };
    let memory = 0;
    return {
      async before() {
        calls = await redisCommandCalls(admin);
        memory = await redisUsedMemory(admin);
      },
      async after(requests) {
        // The two INFO calls of before() are counted in this reading; this one is not yet.
        const now = await redisCommandCalls(admin);
        const grown = (await redisUsedMemory(admin)) - memory;
        return {
          commandsPerRequest: (now.all - calls.all - 2) / Math.max(1, requests),
          scriptsPerRequest: (now.scripts - calls.scripts) / Math.max(1, requests),
          bytesPerRecord: scenario === "first" ? grown / Math.max(1, requests) : undefined,
        };
      },
    };
  }
  if (target.store === "sqlite" && sqlitePath && scenario === "first") {
    return {
      async before() {},
      async after() {
        return { commandsPerRequest: undefined, bytesPerRecord: sqliteBytesPerRecord(sqlitePath) };
      },
    };
  }
  return undefined;
}

async function withServer<T>(
  target: Target,
  fn: (server: RunningServer, config: ServerConfig) => Promise<T>,
): Promise<T> {
  if (target.store === "redis") await redis?.clean();
  const config: ServerConfig = {
    ...target,
    redisUrl: redis?.url,
    sqlitePath: target.store === "sqlite" ? freshSqlitePath(sqliteDir) : undefined,
    databaseUrl: target.store === "postgres" ? databaseUrl : undefined,
    postgresTable: target.store === "postgres" ? `bench_${nextTag().replace(/-/g, "_")}` : undefined,
    mongodbUrl: target.store === "mongodb" ? mongodbUrl : undefined,
    mongodbCollection: target.store === "mongodb" ? `bench_${nextTag().replace(/-/g, "_")}` : undefined,
  };
  const server = await startServer(config);
  try {
    return await fn(server, config);
  } catch (error) {
    if (error instanceof WiringError) throw error;
    throw new Error(`${targetName(target)}: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  } finally {
    await server.stop();
  }
}

function scenariosOf(target: Target): Scenario[] {
  return isBaseline(target.library) ? ["baseline"] : ["first", "replay"];
}

/** One load run of one case: the result and how many times the handler ran meanwhile (replay: the seed). */
async function measure(
  server: RunningServer,
  target: Target,
  scenario: Scenario,
  config: ServerConfig,
): Promise<{ result: LoadResult; runs: number }> {
  const probe = isBaseline(target.library) ? undefined : storeProbe(target, scenario, config.sqlitePath);
  const tag = nextTag();
  const before = await executions(server.url);
  let result: LoadResult;
  if (scenario === "replay") {
    const seed = await postOrder(server.url, `${tag}-seed`);
    const check = await replay(server.url, `${tag}-seed`);
    if (seed.status !== 201 || check.status !== 201 || check.body !== seed.body) {
      throw new WiringError(target, `seeding the replay key answered ${seed.status} then ${check.status}`);
    }
    result = await runLoad(server.url, { fixed: `${tag}-seed`, expectBody: seed.body }, load, probe);
  } else {
    result = await runLoad(server.url, { uniquePrefix: tag }, load, probe);
  }
  return { result, runs: (await executions(server.url)) - before };
}

function logRun(target: Target, scenario: Scenario, r: LoadResult): void {
  const rate = Math.round(r.requestsPerSecond).toString().padStart(6);
  log(
    `  ${targetName(target).padEnd(28)} ${scenario.padEnd(8)} ${rate} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms  ` +
      `${Math.round(r.cpuMicrosPerRequest)} µs CPU/req`,
  );
}

function readVersion(name: string): string {
  const file = new URL(`../node_modules/${name}/package.json`, import.meta.url);
  const { version } = JSON.parse(readFileSync(file, "utf8")) as { version: string };
  if (!name.startsWith("@idempotency/")) return version;
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    return `${version} (this repository at ${commit})`;
  } catch {
    return `${version} (this repository)`;
  }
}

const formatLoad = () =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(", ");

async function main(): Promise<void> {
  const cpuList = cpus();
  const env: Environment = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: `${cpuList.length} × ${cpuList[0]?.model.trim() ?? "unknown CPU"}`,
    os: `${type()} ${release()}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
    loadBefore: formatLoad(),
    loadAfter: "",
    redis: undefined,
    versions: Object.fromEntries(
      [
        "@idempotency/express",
        "@idempotency/fastify",
        "@idempotency/hono",
        "@idempotency/koa",
        "express-idempotency",
        "@node-idempotency/core",
        "@node-idempotency/storage-adapter-memory",
        "@node-idempotency/storage-adapter-redis",
        "express",
        "fastify",
        "hono",
        "koa",
        "autocannon",
      ].map((name) => [name, readVersion(name)]),
    ),
    command: `bench${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(" ")}` : ""}`,
    load,
    rounds,
    quick,
  };

  if (stores.has("redis")) {
    redis = await startRedis();
    env.redis = redis.description;
  }

  const cases = targets.flatMap((target) => scenariosOf(target).map((scenario) => ({ target, scenario })));
  const measurements: Measurement[] = cases.map(({ target, scenario }) => ({
    target,
    scenario,
    rounds: [],
    executions: [],
  }));
  const record = (index: number, run: { result: LoadResult; runs: number }) => {
    const entry = measurements[index]!;
    entry.rounds.push(run.result);
    entry.executions.push(run.runs);
    logRun(entry.target, entry.scenario, run.result);
  };

  // One server per target for the wiring checks and the duplicates (and, in a quick run, its load too).
  log(`Wiring checks and concurrent duplicates (${targets.length} servers)…`);
  const wiring: WiringReport[] = [];
  const duplicates: DuplicatesReport[] = [];
  for (const target of targets) {
    await withServer(target, async (server, config) => {
      wiring.push(await verifyWiring(target, server.url, nextTag()));
      if (isBaseline(target.library)) {
        log(`  ok  ${targetName(target)}`);
      } else {
        const report = await runDuplicates(target, server.url, nextTag(), {
          keys: quick ? 3 : 10,
          burst: 20,
          handlerDelayMs: DUPLICATE_HANDLER_DELAY_MS,
        });
        duplicates.push(report);
        log(
          `  ok  ${targetName(target)}; duplicates: ${report.burstExecutions} runs for ${report.keys} keys`,
        );
      }
      if (quick) {
        // Replay first: requests of a unique-key run still in flight when autocannon stops would otherwise
        // run the handler during the replay run and be counted there.
        for (const scenario of [...scenariosOf(target)].reverse()) {
          const index = cases.findIndex((c) => c.target === target && c.scenario === scenario);
          record(index, await measure(server, target, scenario, config));
        }
      }
    });
  }

  for (let round = 0; !quick && round < rounds; round++) {
    log(`Load, round ${round + 1} of ${rounds} (${cases.length} runs, each on a fresh server)…`);
    // Each round starts at a different case, so no library always runs first or right after another.
    const offset = Math.floor((round * cases.length) / rounds);
    for (let i = 0; i < cases.length; i++) {
      const index = (i + offset) % cases.length;
      const { target, scenario } = cases[index]!;
      record(index, await withServer(target, (server, config) => measure(server, target, scenario, config)));
    }
  }
  env.loadAfter = formatLoad();

  const report = renderReport(env, wiring, duplicates, measurements);
  process.stdout.write(report);
  if (outFile) {
    mkdirSync(new URL("../results/", import.meta.url), { recursive: true });
    writeFileSync(outFile, report);
    const chartFile = outFile.replace(/(\.md)?$/, ".svg");
    writeFileSync(chartFile, renderChart(measurements, `@idempotency benchmark, ${env.date.slice(0, 10)}`));
    log(`Written to ${outFile} and ${chartFile}`);
  }
  const found = problems(measurements, duplicates);
  if (found.length > 0) {
    process.exitCode = 1;
    log(
      `\nCORRECTNESS PROBLEMS (the report above includes them):\n${found.map((p) => `  - ${p}`).join("\n")}`,
    );
  }
}

/**
 * What a correct library never does, whatever its speed: fail a request of these scenarios, replay another
 * body, run the handler again for a completed key, or twice for concurrent duplicates. Reported after the
 * report, and the exit code is 1, so a CI smoke run catches it.
 */
function problems(measurements: Measurement[], duplicates: DuplicatesReport[]): string[] {
  const found: string[] = [];
  for (const m of measurements) {
    const name = `${targetName(m.target)} ${m.scenario}`;
    for (const r of m.rounds) {
      if (r.non2xx + r.errors + r.timeouts > 0) {
        found.push(`${name}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
      }
      if (r.mismatches > 0) found.push(`${name}: ${r.mismatches} replays with another body`);
    }
    if (m.scenario === "replay" && m.executions.some((runs) => runs !== 1)) {
      found.push(`${name}: the handler ran ${m.executions.join(", ")} times (1 per run is correct)`);
    }
  }
  for (const d of duplicates) {
    if (d.keysRunTwice > 0)
      found.push(`${targetName(d.target)}: ${d.keysRunTwice} duplicated keys ran twice`);
    if (d.immediate.ranAgain > 0) {
      found.push(`${targetName(d.target)}: ${d.immediate.ranAgain} immediate retries ran the handler again`);
    }
  }
  return found;
}

try {
  await main();
} catch (error) {
  process.exitCode = 1;
  if (error instanceof WiringError) log(`WIRING CHECK FAILED: ${error.message}`);
  else log(error instanceof Error && error.stack ? error.stack : String(error));
} finally {
  closeClient();
  await redis?.clean().catch(() => undefined);
  await redis?.stop();
  rmSync(sqliteDir, { recursive: true, force: true });
}
