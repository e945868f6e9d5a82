import type { IdempotencyStore } from "@idempotency/core";
import { idempotency } from "@idempotency/fastify";
import Fastify, { type FastifyInstance, type FastifyRequest } from "fastify";
import { authenticate } from "./auth.js";

export interface Order {
  id: number;
  tenant: string;
  item: string;
  quantity: number;
}

/**
 * An orders API whose `POST /orders` is safe to retry: send an `Idempotency-Key` and a retry gets the stored
 * response instead of creating a second order. Each tenant has its own keys: the scope is the tenant of the
 * authenticated user (`Authorization: Bearer <token>`). The body is validated by a JSON schema before the key
 * is claimed, so an invalid order never uses up its key.
 */
export async function createApp(
  store: IdempotencyStore,
): Promise<{ app: FastifyInstance; orders: Map<number, Order> }> {
  const orders = new Map<number, Order>();
  const app = Fastify();

  // Authentication runs first (onRequest, before the guard's preHandler), so the guard can scope keys by the
  // user it verified. Never scope by a header the client chooses (an X-Tenant-Id): any client could then name
  // another tenant and read its replays.
  app.decorateRequest("user", null);
  app.addHook("onRequest", authenticate);

  await app.register(idempotency, {
    store,
    scope: (request) => (request.native as FastifyRequest).user!.tenantId,
    required: true, // a POST without a key is refused (400) rather than run unprotected
  });

  app.post(
    "/orders",
    {
      config: { idempotency: true },
      schema: {
        body: {
          type: "object",
          required: ["item"],
          properties: { item: { type: "string" }, quantity: { type: "integer", minimum: 1 } },
        },
      },
    },
    async (request, reply) => {
      const { item, quantity = 1 } = request.body as { item: string; quantity?: number };
      if (item === "unobtainium") {
        reply.notStarted(); // nothing happened: a corrected retry with the same key may run
        return reply.code(400).send({ error: "we do not sell that" });
      }
      const order: Order = { id: orders.size + 1, tenant: request.user!.tenantId, item, quantity };
      orders.set(order.id, order);
      reply.code(201).header("location", `/orders/${order.id}`);
      return order;
    },
  );

  app.get("/orders/:id", async (request, reply) => {
    const order = orders.get(Number((request.params as { id: string }).id));
    if (order && order.tenant === request.user!.tenantId) return order;
    return reply.code(404).send({ error: "no such order" });
  });

  return { app, orders };
}
