// Type-checked against Fastify 4's own declarations (tsconfig.fastify4.json maps "fastify" to the fastify4
// alias): the plugin's types, its module augmentation and the documented usage compile on Fastify 4 too.
import { MemoryStore } from "@idempotency/core";
import Fastify from "fastify";
import idempotencyPlugin, { idempotency, notStarted } from "../src/index.js";

export async function build() {
  const app = Fastify();
  await app.register(idempotency, { store: new MemoryStore(), scope: "global", allRoutes: true });
  await app.register(idempotencyPlugin, { store: new MemoryStore(), scope: (request) => request.path });
  app.post("/orders", { config: { idempotency: { required: true } } }, async (_request, reply) => {
    notStarted(reply);
    return reply.notStarted().code(403).send({ error: "forbidden" });
  });
  app.post("/open", { config: { idempotency: false } }, async () => "open");
  return app;
}
