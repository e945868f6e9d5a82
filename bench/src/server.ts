/**
 * One benchmark server, run as a child process: Express 5 with one `POST /orders` route guarded by the
 * library under test, a counter of handler executions (the side effect) on `GET /__bench/executions`, and
 * the same final error handler for every library. It tells the parent its port over IPC and exits on
 * SIGTERM after closing what it opened.
 */
import type { Server } from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { MemoryStore } from "@idempotency/core";
import { idempotency as ours } from "@idempotency/express";
import { MongoStore } from "@idempotency/mongodb";
import { PostgresStore } from "@idempotency/postgres";
import { RedisStore } from "@idempotency/redis";
import { SqliteStore } from "@idempotency/sqlite";
import { MemoryStorageAdapter } from "@node-idempotency/storage-adapter-memory";
import { RedisStorageAdapter } from "@node-idempotency/storage-adapter-redis";
import express, { type ErrorRequestHandler, type Request, type RequestHandler, type Response } from "express";
import { idempotency as expressIdempotency, getSharedIdempotencyService } from "express-idempotency";
import { Redis } from "ioredis";
import { MongoClient } from "mongodb";
import pg from "pg";
import {
  CPU_PATH,
  EXECUTIONS_PATH,
  HANDLER_DELAY_HEADER,
  ORDERS_PATH,
  REDIS_PREFIX_NODE_IDEMPOTENCY,
  REDIS_PREFIX_OURS,
  type ServerConfig,
} from "./config.js";
import { Idempotency, nodeIdempotencyMiddleware } from "./node-idempotency-express.js";
import { createOrder } from "./order.js";

const config = JSON.parse(process.env.BENCH_SERVER ?? "null") as ServerConfig | null;
if (!config) throw new Error("BENCH_SERVER is not set: this file is started by src/main.ts");

let executions = 0;
const closers: Array<() => Promise<unknown> | unknown> = [];

/** The business handler: counts one execution, then answers 201 with the created order. */
async function createOrderHandler(req: Request, res: Response): Promise<void> {
  executions += 1;
  const sequence = executions;
  const delayMs = Number(req.headers[HANDLER_DELAY_HEADER] ?? 0);
  if (delayMs > 0) await delay(delayMs);
  res.status(201).location(`${ORDERS_PATH}/${sequence}`).json(createOrder(req.body, sequence));
}

/** express-idempotency calls `next()` after a replay too; its README has the handler check `isHit`. */
const expressIdempotencyHandler: RequestHandler = async (req, res) => {
  if (getSharedIdempotencyService().isHit(req)) return;
  await createOrderHandler(req, res);
};

async function routeHandlers(cfg: ServerConfig): Promise<RequestHandler[]> {
  const json = express.json();
  switch (cfg.library) {
    case "plain":
      return [json, createOrderHandler];
    case "ours": {
      // Our README: the middleware goes before the body parser, so it fingerprints the exact bytes.
      // BENCH_OURS_OPTIONS (JSON) adds options, for profiling a variant (`pnpm profile`); the report never sets it.
      const extra = JSON.parse(process.env.BENCH_OURS_OPTIONS ?? "{}") as Record<string, unknown>;
      return [ours({ store: await oursStore(cfg), scope: "global", ...extra }), json, createOrderHandler];
    }
    case "express-idempotency": {
      if (cfg.store !== "memory") throw new Error("express-idempotency ships only an in-memory adapter");
      // Its defaults: in-memory data adapter, 2xx responses stored; it compares `req.body`, so it runs after
      // the parser.
      return [json, expressIdempotency() as unknown as RequestHandler, expressIdempotencyHandler];
    }
    case "node-idempotency":
      return [json, nodeIdempotencyMiddleware(await nodeIdempotency(cfg)), createOrderHandler];
    default:
      throw new Error(`${cfg.library} runs on src/server-fastify.ts`);
  }
}

async function oursStore(cfg: ServerConfig) {
  switch (cfg.store) {
    case "memory":
      return new MemoryStore();
    case "redis": {
      const client = new Redis(required(cfg.redisUrl, "redisUrl"), { maxRetriesPerRequest: 1 });
      closers.push(() => client.quit());
      return new RedisStore({ client, prefix: REDIS_PREFIX_OURS });
    }
    case "sqlite": {
      const store = new SqliteStore({ path: required(cfg.sqlitePath, "sqlitePath") });
      closers.push(() => store.close());
      return store;
    }
    case "postgres": {
      const pool = new pg.Pool({ connectionString: required(cfg.databaseUrl, "databaseUrl"), max: 10 });
      const table = required(cfg.postgresTable, "postgresTable");
      const store = new PostgresStore({ pool, table });
      await store.createTable();
      closers.push(async () => {
        await pool.query(`DROP TABLE IF EXISTS "${table}"`);
        await pool.end();
      });
      return store;
    }
    case "mongodb": {
      const client = new MongoClient(required(cfg.mongodbUrl, "mongodbUrl"));
      const collection = client
        .db("idempotency_bench")
        .collection(required(cfg.mongodbCollection, "mongodbCollection"));
      // MONGODB_WRITE_CONCERN=1 on a standalone server; the store's default is "majority".
      const w = process.env.MONGODB_WRITE_CONCERN;
      const store = new MongoStore({
        collection,
        ...(w ? { writeConcern: { w: /^\d+$/.test(w) ? Number(w) : w } } : {}),
      });
      await store.ensureIndexes();
      closers.push(async () => {
        await collection.drop().catch(() => undefined);
        await client.close();
      });
      return store;
    }
    case "none":
      throw new Error("our middleware needs a store");
  }
}

async function nodeIdempotency(cfg: ServerConfig): Promise<Idempotency> {
  // Only the key prefix differs from the library's defaults, so a shared Redis can be cleaned afterwards.
  const options = { cacheKeyPrefix: REDIS_PREFIX_NODE_IDEMPOTENCY };
  if (cfg.store === "memory") return new Idempotency(new MemoryStorageAdapter(), options);
  if (cfg.store === "redis") {
    const adapter = new RedisStorageAdapter({ url: required(cfg.redisUrl, "redisUrl") });
    await adapter.connect();
    closers.push(() => adapter.disconnect());
    return new Idempotency(adapter, options);
  }
  throw new Error(`@node-idempotency has no ${cfg.store} adapter in this benchmark`);
}

function required(value: string | undefined, name: string): string {
  if (!value) throw new Error(`BENCH_SERVER.${name} is required for this store`);
  return value;
}

/** The same for every library: whatever status a middleware set (409, 417, 422…), else 500, as JSON. */
const errorHandler: ErrorRequestHandler = (error, _req, res, next) => {
  if (res.headersSent) return next(error);
  const status = res.statusCode >= 400 ? res.statusCode : 500;
  res.status(status).json({ error: error instanceof Error ? error.message : String(error) });
};

const app = express();
app.get(EXECUTIONS_PATH, (_req, res) => {
  res.json({ executions });
});
app.get(CPU_PATH, (_req, res) => {
  const { user, system } = process.cpuUsage();
  res.json({ micros: user + system });
});
app.post(ORDERS_PATH, ...(await routeHandlers(config)));
app.use(errorHandler);

const server: Server = app.listen(0, "127.0.0.1", () => {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  process.send?.({ port: address.port });
});
server.keepAliveTimeout = 60_000;

process.once("SIGTERM", () => {
  server.closeAllConnections();
  server.close(async () => {
    for (const close of closers) await close();
    process.exit(0);
  });
});
