// One application server process for the reliability scenarios: plain JavaScript that imports the BUILT
// packages by name, so it runs exactly what users get. The parent forks it with one JSON argument:
//
//   { binding: "express" | "koa" | "hono" | "fastify", store: "sqlite" | "redis" | "postgres" | "memory",
//     sqlitePath?, redisUrl?, databaseUrl?, postgresTable?, ledgerPath, leaseMs?, ttlMs?, onLeaseExpired?, storeTimeoutMs?,
//     maxRequestBytes?, requestTimeoutMs? }
//
// `requestTimeoutMs` is Node's `requestTimeout` (the whole request must arrive within it, else 408 and the
// connection is closed), checked every 100 ms instead of Node's default 30 s.
//
// and it answers { type: "listening", port } over IPC once it accepts connections on 127.0.0.1.
//
// Its one route, POST /orders, is the side effect under test: it appends a row (key, tenant, pid, a fresh
// execution id, the body it is about to send) to the ledger, a SQLite file OUTSIDE the idempotency store
// that every server process shares, then sleeps `x-handler-ms` milliseconds and answers 201 with that body.
// The principal comes from `x-tenant` (the test's stand-in for an authenticated user), and the response also
// sets Set-Cookie and WWW-Authenticate, which a replay must never carry.
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
  return new MemoryStore();
}

const store = await openStore();
const options = {
  store,
  scope: (request) => request.headers.get("x-tenant") ?? "anonymous",
  ...(config.leaseMs ? { leaseMs: config.leaseMs } : {}),
  ...(config.ttlMs ? { ttlMs: config.ttlMs } : {}),
  ...(config.onLeaseExpired ? { onLeaseExpired: config.onLeaseExpired } : {}),
  ...(config.storeTimeoutMs ? { storeTimeoutMs: config.storeTimeoutMs } : {}),
  ...(config.maxRequestBytes ? { maxRequestBytes: config.maxRequestBytes } : {}),
};

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
  await sleep(Number(header("x-handler-ms") ?? 0));
  return {
    body,
    headers: {
      "content-type": "application/json",
      "x-execution": execution,
      "set-cookie": `session=${execution}; HttpOnly`,
      "www-authenticate": 'Bearer realm="orders"',
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
      serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1", serverOptions }, (info) =>
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
    return app.server.address().port;
  }
  throw new Error(`unknown binding ${config.binding}`);
}

const port = await listen();
process.on("message", (message) => {
  if (message.type === "exit") process.exit(0);
});
process.send({ type: "listening", port, pid: process.pid });
