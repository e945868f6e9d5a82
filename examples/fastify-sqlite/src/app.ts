import type { IdempotencyStore } from "@idempotency/core";
import { idempotency } from "@idempotency/fastify";
import Fastify, { type FastifyInstance } from "fastify";

export interface Order {
  id: number;
  item: string;
  quantity: number;
}

/**
 * An orders API whose `POST /orders` is safe to retry: send an `Idempotency-Key` and a retry gets the stored
 * response instead of creating a second order. Each tenant (`X-Tenant-Id`) has its own keys. The body is
 * validated by a JSON schema before the key is claimed, so an invalid order never uses up its key.
 */
export async function createApp(
  store: IdempotencyStore,
): Promise<{ app: FastifyInstance; orders: Map<number, Order> }> {
  const orders = new Map<number, Order>();
  const app = Fastify();

  await app.register(idempotency, {
    store,
    scope: (request) => request.headers.get("x-tenant-id") ?? "public",
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
      const order: Order = { id: orders.size + 1, item, quantity };
      orders.set(order.id, order);
      reply.code(201).header("location", `/orders/${order.id}`);
      return order;
    },
  );

  app.get("/orders/:id", async (request, reply) => {
    const order = orders.get(Number((request.params as { id: string }).id));
    if (order) return order;
    return reply.code(404).send({ error: "no such order" });
  });

  return { app, orders };
}
