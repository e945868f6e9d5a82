// One application server process for the reliability scenarios: plain JavaScript that imports the BUILT
// packages by name, so it runs exactly what users get. The parent forks it with one JSON argument:
//
//   { binding: "express" | "koa" | "hono" | "fastify", store: "sqlite" | "redis" | "postgres" | "memory",
//     sqlitePath?, redisUrl?, databaseUrl?, postgresTable?, ledgerPath, leaseMs?, ttlMs?, onLeaseExpired?, storeTimeoutMs?,
//     maxRequestBytes?, requestTimeoutMs?, maxEntries?, keepStoreCalls? }
//
// (`requestTimeoutMs` is Node's `requestTimeout`: the whole request must arrive within it, else 408 and the
// connection is closed, checked every 100 ms instead of Node's default 30 s), and it answers
// { type: "listening", port } over IPC once it accepts connections on 127.0.0.1. Later IPC
// requests { type, id } are answered with { type, id, ... }:
// - "stats": memory (after a full GC when the process runs with --expose-gc), active resources by type,
//   and the listeners on the process and on the HTTP server;
// - "store-calls" (memory store with keepStoreCalls): every argument each store call received, and what
//   MemoryStore.get answers now for every key those calls named; bytes as base64. The MemoryStore's
//   records live in this process, so this is how the parent reads them raw.
//
// Its one route, POST /orders, is the side effect under test: it appends a row (key, tenant, pid, a fresh
// execution id, the body it is about to send) to the ledger, a SQLite file OUTSIDE the idempotency store
// that every server process shares, then (with `x-hold`) says { type: "held", key } and waits until the
// parent sends { type: "release", keys }, sleeps `x-handler-ms` milliseconds and answers 201 with that body.
// The principal comes from `x-tenant` (the test's stand-in for an authenticated user), and the response also
// sets credential headers (two Set-Cookie, WWW-Authenticate, Authorization, Proxy-Authenticate, each with a
// fresh secret that appears nowhere else), which a replay must never carry, beside headers it must replay
// byte for byte (Location, Cache-Control, a header set twice, a Latin-1 value).
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { MemoryStore } from "@idempotency/core";
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
    return new SqliteStore({ path: config.sqlitePath });
  }
  if (config.store === "redis") {
    const { Redis } = await import("ioredis");
    const { RedisStore } = await import("@idempotency/redis");
    const client = new Redis(config.redisUrl, { maxRetriesPerRequest: 1 });
    client.on("error", () => undefined); // the store reports failures as IdempotencyStoreError
    return new RedisStore({ client });
  }
  if (config.store === "postgres") {
    const { default: pg } = await import("pg");
    const { PostgresStore } = await import("@idempotency/postgres");
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 8 });
    pool.on("error", () => undefined); // the store reports failures as IdempotencyStoreError
    return new PostgresStore({ pool, table: config.postgresTable });
  }
  return new MemoryStore(config.maxEntries ? { maxEntries: config.maxEntries } : {});
}

/** Every call the engine makes to `store`, with its arguments, kept for the parent to inspect. */
function keepingCalls(store, calls) {
  const kept = {};
  for (const operation of ["begin", "complete", "extend", "release", "get", "delete"]) {
    kept[operation] = (...args) => {
      calls.push({ operation, args });
      return store[operation](...args);
    };
  }
  return kept;
}

const storeCalls = [];
const openedStore = await openStore();
const store = config.keepStoreCalls ? keepingCalls(openedStore, storeCalls) : openedStore;
const options = {
  store,
  scope: (request) => request.headers.get("x-tenant") ?? "anonymous",
  ...(config.leaseMs ? { leaseMs: config.leaseMs } : {}),
  ...(config.ttlMs ? { ttlMs: config.ttlMs } : {}),
  ...(config.onLeaseExpired ? { onLeaseExpired: config.onLeaseExpired } : {}),
  ...(config.storeTimeoutMs ? { storeTimeoutMs: config.storeTimeoutMs } : {}),
  ...(config.maxRequestBytes ? { maxRequestBytes: config.maxRequestBytes } : {}),
};
const secret = () => randomUUID().replaceAll("-", "");

/** Handlers of requests sent with `x-hold`, waiting (their claims held) until the parent releases their key. */
const held = new Map();
const hold = (key) =>
  new Promise((resolve) => {
    held.set(key, [...(held.get(key) ?? []), resolve]);
    process.send({ type: "held", key });
  });

/** Node `http.createServer` options: Node's defaults, or the short request timeout of `requestTimeoutMs`. */
const serverOptions = config.requestTimeoutMs
  ? { requestTimeout: config.requestTimeoutMs, connectionsCheckingInterval: 100 }
  : {};

/** The side effect: one ledger row, then the wait, then the response the row announced. */
async function execute(header) {
  const key = header("idempotency-key") ?? "";
  const tenant = header("x-tenant") ?? "anonymous";
  const execution = randomUUID();
  const body = JSON.stringify({ key, tenant, pid: process.pid, execution });
  record.run(key, tenant, process.pid, execution, body, Date.now());
  if (header("x-hold") !== null && header("x-hold") !== undefined) await hold(key);
  await sleep(Number(header("x-handler-ms") ?? 0));
  return {
    body,
    headers: {
      "content-type": "application/json",
      "x-execution": execution,
      location: `/orders/${execution}`,
      "cache-control": "private, max-age=60",
      "x-twice": ["first", "second, with a comma"],
      "x-latin1": "caf\u00e9 \u00bd",
      "set-cookie": [`session=${secret()}; HttpOnly`, `csrf=${secret()}; Path=/`],
      "www-authenticate": `Bearer realm="orders", nonce="${secret()}"`,
      authorization: `Bearer ${secret()}`,
      "proxy-authenticate": `Basic realm="${secret()}"`,
      "authentication-info": `nextnonce="${secret()}"`,
      "proxy-authentication-info": `nextnonce="${secret()}"`,
    },
  };
}

async function listen() {
  if (config.binding === "express") {
    const { default: express } = await import("express");
    const { idempotency } = await import("@idempotency/express");
    const app = express();
    app.post("/orders", idempotency(options), express.json(), async (req, res) => {
      const { body, headers } = await execute((name) => req.get(name));
      res.status(201).set(headers).send(body);
    });
    const server = createServer(serverOptions, app);
    httpServer = server;
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return server.address().port;
  }
  if (config.binding === "koa") {
    const { default: Koa } = await import("koa");
    const { bodyParser } = await import("@koa/bodyparser");
    const { idempotency } = await import("@idempotency/koa");
    const app = new Koa();
    // Koa's default logs client errors too: a body parser's 400 for invalid JSON, and Node's own errors on the
    // connection, reported against the request in flight: a parser error (HPE_*: bytes after a body that are no
    // request) or the server's request timeout (Node has answered 408 itself).
    app.on("error", (error) => {
      if (error.status >= 400 && error.status < 500) return;
      if (String(error.code).startsWith("HPE_") || error.code === "ERR_HTTP_REQUEST_TIMEOUT") return;
      console.error(error);
    });
    const guard = idempotency(options);
    const parse = bodyParser();
    app.use(async (ctx, next) => {
      if (ctx.method !== "POST" || ctx.path !== "/orders") return next();
      await guard(ctx, () =>
        parse(ctx, async () => {
          const { body, headers } = await execute((name) => ctx.get(name) || null);
          ctx.status = 201;
          ctx.set(headers);
          ctx.body = body;
          ctx.type = "application/json";
        }),
      );
    });
    const server = createServer(serverOptions, app.callback());
    httpServer = server;
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return server.address().port;
  }
  if (config.binding === "hono") {
    const { Hono } = await import("hono");
    const { serve } = await import("@hono/node-server");
    const { idempotency } = await import("@idempotency/hono");
    const app = new Hono();
    app.post("/orders", idempotency(options), async (c) => {
      if (c.req.header("content-type")?.includes("json")) {
        // As a real handler would: Hono's c.req.json() throws on a body that is not JSON, and Hono answers an
        // uncaught error with 500.
        try {
          await c.req.json();
        } catch {
          return c.json({ error: "the body is not JSON" }, 400);
        }
      }
      const { body, headers } = await execute((name) => c.req.header(name) ?? null);
      return c.body(body, 201, headers);
    });
    return await new Promise((resolve) => {
      httpServer = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1", serverOptions }, (info) =>
        resolve(info.port),
      );
    });
  }
  if (config.binding === "fastify") {
    const { default: Fastify } = await import("fastify");
    const { idempotency } = await import("@idempotency/fastify");
    const app = Fastify(
      config.requestTimeoutMs ? { requestTimeout: config.requestTimeoutMs, http: serverOptions } : {},
    );
    await app.register(idempotency, options);
    app.post("/orders", { config: { idempotency: true } }, async (request, reply) => {
      const { body, headers } = await execute((name) => {
        const value = request.headers[name];
        return value === undefined ? null : String(value);
      });
      return reply.code(201).headers(headers).send(body);
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    httpServer = app.server;
    return app.server.address().port;
  }
  throw new Error(`unknown binding ${config.binding}`);
}

let httpServer;
const port = await listen();

/** Counts of each type in `process.getActiveResourcesInfo()` (sockets, timers, file handles, …). */
function activeResources() {
  const counts = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

function listenerCounts(emitter) {
  let total = 0;
  for (const name of emitter.eventNames()) total += emitter.listenerCount(name);
  return total;
}

const base64 = (bytes) => (bytes instanceof Uint8Array ? Buffer.from(bytes).toString("base64") : bytes);

async function storeCallsDump() {
  const calls = storeCalls.map(({ operation, args }) => ({
    operation,
    args: args.map((arg) =>
      arg instanceof Uint8Array ? { base64: base64(arg) } : arg === null ? null : structuredClone(arg),
    ),
  }));
  const keys = [...new Set(storeCalls.map(({ args }) => args[0]))];
  const records = [];
  for (const key of keys) {
    const record = await openedStore.get(key);
    records.push({ key, record: record && { ...record, response: base64(record.response) } });
  }
  return { calls, records };
}

process.on("message", async (message) => {
  if (message.type === "exit") process.exit(0);
  if (message.type === "release") {
    for (const key of message.keys) {
      for (const resolve of held.get(key) ?? []) resolve();
      held.delete(key);
    }
  }
  if (message.type === "stats") {
    if (typeof globalThis.gc === "function") {
      globalThis.gc();
      globalThis.gc();
    }
    process.send({
      type: "stats",
      id: message.id,
      memory: process.memoryUsage(),
      resources: activeResources(),
      listeners: { process: listenerCounts(process), server: httpServer ? listenerCounts(httpServer) : 0 },
    });
  }
  if (message.type === "store-calls") {
    process.send({ type: "store-calls", id: message.id, ...(await storeCallsDump()) });
  }
});
process.send({ type: "listening", port, pid: process.pid });
