// The README's quick start, verbatim except for `export` and the final line (README: `await app.listen`);
// readme.test.ts keeps the two in sync and runs this one.

import { MemoryStore } from "@idempotency/core";
import Fastify, { type FastifyRequest } from "fastify";
import { idempotency } from "../src/index.js";
import { authenticate } from "./auth.js"; // yours (@fastify/jwt, …): sets request.user or answers 401

type AuthenticatedRequest = FastifyRequest & { user: { id: string; tenantId: string } };

export const app = Fastify();
app.addHook("onRequest", authenticate); // before the plugin's hooks
await app.register(idempotency, {
  store: new MemoryStore(),
  scope: (request) => (request.native as AuthenticatedRequest).user.tenantId, // who owns the key
});

app.post("/orders", { config: { idempotency: true } }, async (request, reply) => {
  const { item } = (request.body ?? {}) as { item?: string };
  if (!item) {
    reply.notStarted(); // nothing happened yet: a corrected retry with the same key runs
    return reply.code(400).send({ error: "item is required" });
  }
  reply.code(201).header("location", "/orders/1");
  return { id: 1, item };
});
