/**
 * The Koa benchmark server, run as a child process like src/server.ts: Koa 3 with one `POST /orders` route,
 * guarded by @idempotency/koa (mounted before `@koa/bodyparser`, as its README says) or by nothing (the
 * plain Koa baseline: the body parser and the handler), the same handler and execution counter, and an
 * error handler that answers like the Express one.
 */
import { createServer } from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { MemoryStore } from "@idempotency/core";
import { idempotency } from "@idempotency/koa";
import { bodyParser } from "@koa/bodyparser";
import Koa, { type Middleware } from "koa";
import { CPU_PATH, EXECUTIONS_PATH, HANDLER_DELAY_HEADER, ORDERS_PATH, type ServerConfig } from "./config.js";
import { createOrder } from "./order.js";

const config = JSON.parse(process.env.BENCH_SERVER ?? "null") as ServerConfig | null;
if (!config) throw new Error("BENCH_SERVER is not set: this file is started by src/main.ts");

let executions = 0;
const app = new Koa();

app.use(async (ctx, next) => {
  try {
    await next();
  } catch (error) {
    const status = (error as { status?: number }).status ?? 500;
    ctx.status = status >= 400 ? status : 500;
    ctx.body = { error: error instanceof Error ? error.message : String(error) };
  }
});

app.use(async (ctx, next) => {
  if (ctx.method !== "GET") return next();
  if (ctx.path === EXECUTIONS_PATH) ctx.body = { executions };
  else if (ctx.path === CPU_PATH) {
    const { user, system } = process.cpuUsage();
    ctx.body = { micros: user + system };
  } else await next();
});

if (config.library === "ours-koa") {
  if (config.store !== "memory") throw new Error("the Koa rows run on the memory store only");
  app.use(idempotency({ store: new MemoryStore(), scope: "global" }) as Middleware);
} else if (config.library !== "plain-koa") {
  throw new Error(`${config.library} is not a Koa server`);
}
app.use(bodyParser());

app.use(async (ctx) => {
  if (ctx.method !== "POST" || ctx.path !== ORDERS_PATH) {
    ctx.status = 404;
    return;
  }
  executions += 1;
  const sequence = executions;
  const delayMs = Number(ctx.get(HANDLER_DELAY_HEADER) || 0);
  if (delayMs > 0) await delay(delayMs);
  ctx.status = 201;
  ctx.set("location", `${ORDERS_PATH}/${sequence}`);
  ctx.body = createOrder(ctx.request.body as Parameters<typeof createOrder>[0], sequence);
});

const server = createServer(app.callback());
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  process.send?.({ port: address.port });
});

process.once("SIGTERM", () => {
  server.close(() => process.exit(0));
});
