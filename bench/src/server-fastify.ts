/**
 * The Fastify benchmark server, run as a child process like src/server.ts: Fastify 5 with one
 * `POST /orders` route, guarded by @idempotency/fastify (registered before the route, the route opting in
 * with `config: { idempotency: true }`, as its README says) or by nothing (the plain Fastify baseline), the
 * same handler and execution counter, and an error handler that answers like the Express one.
 */
import { setTimeout as delay } from "node:timers/promises";
import { MemoryStore } from "@idempotency/core";
import { idempotency } from "@idempotency/fastify";
import Fastify from "fastify";
import { CPU_PATH, EXECUTIONS_PATH, HANDLER_DELAY_HEADER, ORDERS_PATH, type ServerConfig } from "./config.js";
import { createOrder } from "./order.js";

const config = JSON.parse(process.env.BENCH_SERVER ?? "null") as ServerConfig | null;
if (!config) throw new Error("BENCH_SERVER is not set: this file is started by src/main.ts");

let executions = 0;
const app = Fastify({ logger: false, keepAliveTimeout: 60_000 });

app.setErrorHandler((error: Error & { statusCode?: number }, _request, reply) => {
  const status = (error.statusCode ?? 0) >= 400 ? (error.statusCode as number) : 500;
  reply.code(status).send({ error: error.message });
});

if (config.library === "ours-fastify") {
  if (config.store !== "memory") throw new Error("the Fastify rows run on the memory store only");
  await app.register(idempotency, { store: new MemoryStore(), scope: "global" });
} else if (config.library !== "plain-fastify") {
  throw new Error(`${config.library} is not a Fastify server`);
}

app.get(EXECUTIONS_PATH, async () => ({ executions }));
app.get(CPU_PATH, async () => {
  const { user, system } = process.cpuUsage();
  return { micros: user + system };
});
app.post(ORDERS_PATH, { config: { idempotency: true } }, async (request, reply) => {
  executions += 1;
  const sequence = executions;
  const delayMs = Number(request.headers[HANDLER_DELAY_HEADER] ?? 0);
  if (delayMs > 0) await delay(delayMs);
  reply.code(201).header("location", `${ORDERS_PATH}/${sequence}`);
  return createOrder(request.body as Parameters<typeof createOrder>[0], sequence);
});

await app.listen({ port: 0, host: "127.0.0.1" });
const address = app.server.address();
if (address === null || typeof address === "string") throw new Error("no TCP address");
process.send?.({ port: address.port });

process.once("SIGTERM", () => {
  void app.close().then(() => process.exit(0));
});
