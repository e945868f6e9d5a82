/**
 * The benchmark: @idempotency/express side by side with express-idempotency and @node-idempotency/core in one
 * run, over real HTTP on loopback. Checks every library's wiring, runs the concurrent-duplicates scenario,
 * then measures each (library, store, scenario) on a fresh server process, the rounds interleaved so that
 * background load affects every library alike. Prints a markdown report; a full run also writes it to
 * results/latest.md.
 *
 *   pnpm --filter @idempotency/bench bench            # full run, a few minutes
 *   pnpm --filter @idempotency/bench bench --quick    # smoke run (wiring + short load), about 20 s
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem, type } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freshSqlitePath, type RunningServer, startServer } from "./child.js";
import { type ServerConfig, TARGETS, type Target, targetName } from "./config.js";
import { type DuplicatesReport, runDuplicates } from "./duplicates.js";
import { closeClient, executions, postOrder } from "./http.js";
import { type LoadOptions, type LoadResult, runLoad } from "./load.js";
import { type BenchRedis, startRedis } from "./redis.js";
import { type Environment, type Measurement, renderReport, type Scenario } from "./report.js";
import { replay, verifyWiring, WiringError, type WiringReport } from "./verify.js";

const USAGE = `Usage: pnpm --filter @idempotency/bench bench [options]
  --quick              smoke run: wiring checks, duplicates, 1 s of load per case, 1 round; writes no file
  --rounds N           interleaved rounds (default 3)
  --duration S         seconds measured per run (default 6)
  --warmup S           seconds of warm-up per run (default 2)
  --connections N      concurrent connections (default 50)
  --stores LIST        comma-separated: memory,redis,sqlite (default all)
  --out FILE           where to write the report (default results/latest.md; not written with --quick)
  Set REDIS_URL to use an existing Redis instead of a private redis-server.`;

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
  warmup: numberArg("warmup", args.warmup, quick ? 0.5 : 2),
};
const stores = new Set((args.stores ?? "memory,redis,sqlite").split(",").map((s) => s.trim()));
for (const store of stores) {
  if (!["memory", "redis", "sqlite"].includes(store)) throw new Error(`--stores: unknown store "${store}"`);
}
const targets = TARGETS.filter((t) => t.store === "none" || stores.has(t.store));
const outFile = quick ? undefined : (args.out ?? new URL("../results/latest.md", import.meta.url).pathname);

const DUPLICATE_HANDLER_DELAY_MS = 50;
const runTag = `${Date.now().toString(36)}`;
let tagSequence = 0;
const nextTag = () => `${runTag}-${++tagSequence}`;

const log = (line: string) => process.stderr.write(`${line}\n`);

const sqliteDir = mkdtempSync(join(tmpdir(), "idempotency-bench-"));
let redis: BenchRedis | undefined;

async function withServer<T>(
  target: Target,
  handlerDelayMs: number,
  fn: (server: RunningServer) => Promise<T>,
): Promise<T> {
  if (target.store === "redis") await redis?.clean();
  const config: ServerConfig = {
    ...target,
    handlerDelayMs,
    redisUrl: redis?.url,
    sqlitePath: target.store === "sqlite" ? freshSqlitePath(sqliteDir) : undefined,
  };
  const server = await startServer(config);
  try {
    return await fn(server);
  } finally {
    await server.stop();
  }
}

function scenariosOf(target: Target): Scenario[] {
  return target.library === "plain" ? ["baseline"] : ["first", "replay"];
}

/** One run of one case on a fresh server: the load result and the handler executions it caused. */
async function measure(target: Target, scenario: Scenario): Promise<{ result: LoadResult; runs: number }> {
  return withServer(target, 0, async (server) => {
    const tag = nextTag();
    if (scenario === "replay") {
      const seed = await postOrder(server.url, `${tag}-seed`);
      const check = await replay(server.url, `${tag}-seed`);
      if (seed.status !== 201 || check.status !== 201 || check.body !== seed.body) {
        throw new WiringError(target, `seeding the replay key answered ${seed.status} then ${check.status}`);
      }
      const result = await runLoad(server.url, { fixed: `${tag}-seed`, expectBody: seed.body }, load);
      return { result, runs: await executions(server.url) };
    }
    const result = await runLoad(server.url, { uniquePrefix: tag }, load);
    return { result, runs: await executions(server.url) };
  });
}

function readVersion(name: string): string {
  const file = new URL(`../node_modules/${name}/package.json`, import.meta.url);
  return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
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
        "express-idempotency",
        "@node-idempotency/core",
        "@node-idempotency/storage-adapter-memory",
        "@node-idempotency/storage-adapter-redis",
        "express",
        "autocannon",
      ].map((name) => [name, readVersion(name)]),
    ),
    command: `bench${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(" ")}` : ""}`,
    load,
    rounds,
  };

  if (stores.has("redis")) {
    redis = await startRedis();
    env.redis = redis.description;
  }

  log(`Wiring checks (${targets.length} servers)…`);
  const wiring: WiringReport[] = [];
  for (const target of targets) {
    wiring.push(await withServer(target, 0, (server) => verifyWiring(target, server.url, nextTag())));
    log(`  ok  ${targetName(target)}`);
  }

  log("Concurrent duplicates…");
  const duplicates: DuplicatesReport[] = [];
  for (const target of targets.filter((t) => t.library !== "plain")) {
    const report = await withServer(target, DUPLICATE_HANDLER_DELAY_MS, (server) =>
      runDuplicates(target, server.url, nextTag(), { keys: quick ? 3 : 10, burst: 20 }),
    );
    duplicates.push(report);
    log(`  ${targetName(target)}: ${report.burstExecutions} handler runs for ${report.keys} keys`);
  }

  const cases = targets.flatMap((target) => scenariosOf(target).map((scenario) => ({ target, scenario })));
  const measurements: Measurement[] = cases.map(({ target, scenario }) => ({
    target,
    scenario,
    rounds: [],
    executions: [],
  }));
  for (let round = 0; round < rounds; round++) {
    log(`Load, round ${round + 1} of ${rounds} (${cases.length} runs)…`);
    // Each round starts at a different case, so no library always runs first or right after another.
    const offset = Math.floor((round * cases.length) / rounds);
    for (let i = 0; i < cases.length; i++) {
      const index = (i + offset) % cases.length;
      const { target, scenario } = cases[index]!;
      const { result: r, runs } = await measure(target, scenario);
      measurements[index]!.rounds.push(r);
      measurements[index]!.executions.push(runs);
      log(
        `  ${targetName(target).padEnd(30)} ${scenario.padEnd(8)} ${Math.round(r.requestsPerSecond)
          .toString()
          .padStart(6)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms`,
      );
    }
  }
  env.loadAfter = formatLoad();

  const report = renderReport(env, wiring, duplicates, measurements);
  process.stdout.write(report);
  if (outFile) {
    mkdirSync(new URL("../results/", import.meta.url), { recursive: true });
    writeFileSync(outFile, report);
    log(`Written to ${outFile}`);
  }
}

try {
  await main();
} catch (error) {
  process.exitCode = 1;
  log(error instanceof WiringError ? `WIRING CHECK FAILED: ${error.message}` : String(error));
  if (!(error instanceof WiringError) && error instanceof Error && error.stack) log(error.stack);
} finally {
  closeClient();
  await redis?.clean().catch(() => undefined);
  await redis?.stop();
  rmSync(sqliteDir, { recursive: true, force: true });
}
