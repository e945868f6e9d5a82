/**
 * The Hono benchmark server, run as a child process like src/server.ts: Hono 4 on `@hono/node-server` with
 * one `POST /orders` route, guarded by @idempotency/hono (as route middleware, as its README says) or by
 * nothing (the plain Hono baseline), the same handler and execution counter, and an error handler that
 * answers like the Express one.
 */
import { setTimeout as delay } from "node:timers/promises";
import { serve } from "@hono/node-server";
import { MemoryStore } from "@idempotency/core";
import { idempotency } from "@idempotency/hono";
import { type Handler, Hono, type MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { CPU_PATH, EXECUTIONS_PATH, HANDLER_DELAY_HEADER, ORDERS_PATH, type ServerConfig } from "./config.js";
import { createOrder } from "./order.js";

const config = JSON.parse(process.env.BENCH_SERVER ?? "null") as ServerConfig | null;
if (!config) throw new Error("BENCH_SERVER is not set: this file is started by src/main.ts");

let executions = 0;
const app = new Hono();

app.onError((error, c) => {
  const status = error instanceof HTTPException ? error.status : 500;
  return c.json({ error: error.message }, status);
});

let guard: MiddlewareHandler | undefined;
if (config.library === "ours-hono") {
  if (config.store !== "memory") throw new Error("the Hono rows run on the memory store only");
  guard = idempotency({ store: new MemoryStore(), scope: "global" });
} else if (config.library !== "plain-hono") {
  throw new Error(`${config.library} is not a Hono server`);
}

app.get(EXECUTIONS_PATH, (c) => c.json({ executions }));
app.get(CPU_PATH, (c) => {
  const { user, system } = process.cpuUsage();
  return c.json({ micros: user + system });
});
const createOrderRoute: Handler = async (c) => {
  executions += 1;
  const sequence = executions;
  const delayMs = Number(c.req.header(HANDLER_DELAY_HEADER) ?? 0);
  if (delayMs > 0) await delay(delayMs);
  const order = createOrder(await c.req.json(), sequence);
  c.header("location", `${ORDERS_PATH}/${sequence}`);
  return c.json(order, 201);
};
// The plain baseline registers the handler alone: no middleware at all, not even a pass-through one.
if (guard) app.post(ORDERS_PATH, guard, createOrderRoute);
else app.post(ORDERS_PATH, createOrderRoute);

const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => {
  process.send?.({ port: info.port });
});

process.once("SIGTERM", () => {
  server.close(() => process.exit(0));
});
