/**
 * Server CPU per request for one (library, store, scenario), under a fixed number of requests: much steadier
 * than req/s on shared cores. Optionally writes a V8 CPU profile of the server, or counts the server's
 * instructions per request under callgrind (repeatable to about 1 % on noisy shared cores).
 *
 *   pnpm --filter @idempotency/bench profile ours/memory first
 *   pnpm --filter @idempotency/bench profile plain/none first --requests 40000 --cpu-prof /tmp/prof
 *   pnpm --filter @idempotency/bench profile ours/memory replay --node-option=--trace-deopt
 *   pnpm --filter @idempotency/bench profile ours/memory first --callgrind /tmp/cg --requests 3000 --warmup 1000
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freshSqlitePath, startServer } from "./child.js";
import type { Library, ServerConfig, StoreKind } from "./config.js";
import { sendLoad, serverCpu } from "./load.js";
import { startRedis } from "./redis.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    requests: { type: "string", default: "20000" },
    warmup: { type: "string", default: "5000" },
    connections: { type: "string", default: "50" },
    "cpu-prof": { type: "string" },
    callgrind: { type: "string" },
    "node-option": { type: "string", multiple: true, default: [] },
  },
});
const [target = "ours/memory", scenario = "first"] = positionals;
const [library, store] = target.split("/") as [Library, StoreKind];
if (scenario !== "first" && scenario !== "replay")
  throw new Error(`scenario must be first or replay, got ${scenario}`);
const requests = Number(values.requests);
const warmup = Number(values.warmup);
const connections = Number(values.connections);

const dir = mkdtempSync(join(tmpdir(), "bench-profile-"));
const redis = store === "redis" ? await startRedis() : undefined;
const config: ServerConfig = { library, store };
if (store === "redis") config.redisUrl = redis?.url;
if (store === "sqlite") config.sqlitePath = freshSqlitePath(dir);
const nodeOptions = [...(values["node-option"] ?? [])];
if (values["cpu-prof"]) nodeOptions.push("--cpu-prof", `--cpu-prof-dir=${values["cpu-prof"]}`);
const callgrindDir = values.callgrind;
if (callgrindDir) mkdirSync(callgrindDir, { recursive: true });
// Instrumentation is off until the warm-up is over (JIT tiers, connection set-up), then on for the measured load.
const wrapper = callgrindDir
  ? [
      "valgrind",
      "--tool=callgrind",
      "--instr-atstart=no",
      `--callgrind-out-file=${join(callgrindDir, "callgrind.out")}`,
    ]
  : [];
const server = await startServer(config, nodeOptions, wrapper);

const tag = Date.now().toString(36);
let loads = 0;
// Replays: one key, seeded by the warm-up. First executions: new keys for every load.
const load = (amount: number) =>
  sendLoad(
    server.url,
    scenario === "replay" ? { fixed: `${tag}-replay` } : { uniquePrefix: `${tag}-${++loads}` },
    connections,
    { amount },
  );

try {
  await load(warmup);
  let figure: string;
  let result: Awaited<ReturnType<typeof load>>;
  if (callgrindDir) {
    await callgrindControl(["--instr=on"]);
    await callgrindControl(["--zero"]);
    result = await load(requests);
    await callgrindControl(["--dump"]);
    const instructions = lastDumpTotal(callgrindDir) / requests;
    figure = `${Math.round(instructions / 1000).toLocaleString("en-US")}k instructions per request`;
  } else {
    const before = await serverCpu(server.url);
    result = await load(requests);
    const after = await serverCpu(server.url);
    figure = `${((after - before) / requests).toFixed(1)} µs CPU per request`;
  }
  const bad = result.non2xx + result.errors + result.timeouts;
  const rate = callgrindDir ? "callgrind" : `${Math.round(result.requests.average)} req/s`;
  console.log(
    `${target} ${scenario}: ${figure} over ${requests} requests (${rate}${bad ? `, ${bad} failed` : ""})`,
  );
} finally {
  await server.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Runs `callgrind_control` on the server. Callgrind reads its commands only while the program runs, so the
 * idle server is sent a cheap `GET` every 100 ms until the command is answered (a few requests among thousands).
 */
async function callgrindControl(args: string[]): Promise<void> {
  const control = spawn("callgrind_control", [...args, String(server.pid)], { stdio: "ignore" });
  const done = new Promise<number | null>((resolve, reject) => {
    control.once("exit", resolve);
    control.once("error", reject);
  });
  let answered = false;
  const settle = () => {
    answered = true;
  };
  done.then(settle, settle); // a failure to start is thrown by the `await done` below
  while (!answered) {
    await Promise.race([serverCpu(server.url), done]);
    await Promise.race([new Promise((resolve) => setTimeout(resolve, 100)), done]);
  }
  const code = await done;
  if (code !== 0) throw new Error(`callgrind_control ${args.join(" ")} exited with ${code}`);
}

/** The instruction count (`totals:`) of the newest dump callgrind wrote into `dir`. */
function lastDumpTotal(dir: string): number {
  const dumps = readdirSync(dir)
    .filter((name) => /^callgrind\.out\.\d+$/.test(name))
    .sort((a, b) => Number(a.split(".").pop()) - Number(b.split(".").pop()));
  const newest = dumps.at(-1);
  if (newest === undefined) throw new Error(`callgrind wrote no dump into ${dir}`);
  const total = readFileSync(join(dir, newest), "utf8").match(/^(?:totals|summary): (\d+)/m);
  if (!total) throw new Error(`no totals line in ${join(dir, newest)}`);
  return Number(total[1]);
}
