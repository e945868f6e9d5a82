// An Express server process for the store-fault, lease-lost and cluster scenarios: like server.mjs (same
// ledger, same POST /orders body), plus what those scenarios need to watch and steer from the parent:
//
//   { store: "redis" | "redis-cluster" | "sqlite", redisUrl?, redisCluster?: ["127.0.0.1:port", …],
//     sqlitePath?, busyTimeoutMs?, ledgerPath, leaseMs?, ttlMs?, storeTimeoutMs? }
//
// - every engine event goes to the parent over IPC as { type: "event", event } (the error as its message);
// - every execution is announced as { type: "started", key, execution } once its ledger row is written;
// - request headers steer the handler, after its ledger row: `x-handler-ms` sleeps (the event loop stays
//   free), `x-block-ms` blocks the event loop (Atomics.wait: no timer or I/O runs, no CPU is burnt), and
//   `x-hold: 1` waits for the parent's { type: "release", key } before answering;
// - the answer carries `x-signal-aborted` (whether the claim's signal aborted while the handler ran).
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import Database from "better-sqlite3";

const config = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const ledger = new Database(config.ledgerPath);
ledger.pragma("journal_mode = WAL");
ledger.pragma("busy_timeout = 10000");
const record = ledger.prepare(
  "INSERT INTO executions (key, tenant, pid, execution, body, at) VALUES (?, ?, ?, ?, ?, ?)",
);

async function openStore() {
  if (config.store === "sqlite") {
    const { SqliteStore } = await import("@idempotency/sqlite");
    return new SqliteStore({
      path: config.sqlitePath,
      ...(config.busyTimeoutMs ? { busyTimeoutMs: config.busyTimeoutMs } : {}),
    });
  }
  const { Cluster, Redis } = await import("ioredis");
  const { RedisStore } = await import("@idempotency/redis");
  const client =
    config.store === "redis-cluster"
      ? new Cluster(
          config.redisCluster.map((address) => {
            const [host, port] = address.split(":");
            return { host, port: Number(port) };
          }),
          { redisOptions: { maxRetriesPerRequest: 1 } },
        )
      : new Redis(config.redisUrl, { maxRetriesPerRequest: 1 });
  client.on("error", () => undefined); // the store reports failures as IdempotencyStoreError
  return new RedisStore({ client });
}

const report = (message) => {
  if (process.connected) process.send(message);
};

const store = await openStore();
const { default: express } = await import("express");
const { idempotency, idempotencySignal } = await import("@idempotency/express");
const guard = idempotency({
  store,
  scope: (request) => request.headers.get("x-tenant") ?? "anonymous",
  ...(config.leaseMs ? { leaseMs: config.leaseMs } : {}),
  ...(config.ttlMs ? { ttlMs: config.ttlMs } : {}),
  ...(config.storeTimeoutMs ? { storeTimeoutMs: config.storeTimeoutMs } : {}),
  onEvent: (event) => {
    const { error, ...rest } = event;
    report({ type: "event", event: error ? { ...rest, error: error.message } : rest });
  },
});

const held = new Map();
const block = new Int32Array(new SharedArrayBuffer(4));

const app = express();
app.post("/orders", guard, express.json(), async (req, res) => {
  const key = req.get("idempotency-key") ?? "";
  const tenant = req.get("x-tenant") ?? "anonymous";
  const execution = randomUUID();
  const body = JSON.stringify({ key, tenant, pid: process.pid, execution });
  record.run(key, tenant, process.pid, execution, body, Date.now());
  report({ type: "started", key, execution });
  const blockMs = Number(req.get("x-block-ms") ?? 0);
  if (blockMs > 0) Atomics.wait(block, 0, 0, blockMs);
  if (req.get("x-hold") === "1") await new Promise((resolve) => held.set(key, resolve));
  await sleep(Number(req.get("x-handler-ms") ?? 0));
  res
    .status(201)
    .set({
      "content-type": "application/json",
      "x-execution": execution,
      "x-signal-aborted": String(idempotencySignal(req)?.aborted ?? false),
    })
    .send(body);
});

const server = createServer(app);
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
process.on("message", (message) => {
  if (message.type === "exit") process.exit(0);
  if (message.type === "release") {
    held.get(message.key)?.();
    held.delete(message.key);
  }
});
process.send({ type: "listening", port: server.address().port, pid: process.pid });
