/**
 * Server CPU per request for one (library, store, scenario), under a fixed number of requests: much steadier
 * than req/s on shared cores. Optionally writes a V8 CPU profile of the server.
 *
 *   pnpm --filter @idempotency/bench profile ours/memory first
 *   pnpm --filter @idempotency/bench profile plain/none first --requests 40000 --cpu-prof /tmp/prof
 *   pnpm --filter @idempotency/bench profile ours/memory replay --node-option=--trace-deopt
 */
import { mkdtempSync, rmSync } from "node:fs";
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
const server = await startServer(config, nodeOptions);

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
  const before = await serverCpu(server.url);
  const result = await load(requests);
  const after = await serverCpu(server.url);
  const bad = result.non2xx + result.errors + result.timeouts;
  console.log(
    `${target} ${scenario}: ${((after - before) / requests).toFixed(1)} µs CPU per request over ${requests} requests` +
      ` (${Math.round(result.requests.average)} req/s${bad ? `, ${bad} failed` : ""})`,
  );
} finally {
  await server.stop();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}
