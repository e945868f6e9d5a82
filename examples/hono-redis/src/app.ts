import type { IdempotencyStore } from "@idempotency/core";
import { idempotency, notStarted } from "@idempotency/hono";
import { Hono } from "hono";

export interface Order {
  id: number;
  item: string;
  quantity: number;
}

/**
 * An orders API whose `POST /orders` is safe to retry: send an `Idempotency-Key` and a retry gets the stored
 * response instead of creating a second order. Each tenant (`X-Tenant-Id`) has its own keys.
 */
export function createApp(store: IdempotencyStore) {
  const orders = new Map<number, Order>();
  const app = new Hono();

  const guard = idempotency({
    store,
    scope: (request) => request.headers.get("x-tenant-id") ?? "public",
  });

  app.post("/orders", guard, async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { item?: unknown; quantity?: unknown };
    const { item, quantity = 1 } = body;
    if (typeof item !== "string" || typeof quantity !== "number") {
      notStarted(c); // nothing happened: a corrected retry with the same key may run
      return c.json({ error: 'send {"item": string, "quantity"?: number}' }, 400);
    }
    const order: Order = { id: orders.size + 1, item, quantity };
    orders.set(order.id, order);
    return c.json(order, 201, { Location: `/orders/${order.id}` });
  });

  app.get("/orders/:id", (c) => {
    const order = orders.get(Number(c.req.param("id")));
    return order ? c.json(order) : c.json({ error: "no such order" }, 404);
  });

  return { app, orders };
}
