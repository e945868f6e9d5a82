import type { IdempotencyStore } from "@idempotency/core";
import { idempotency, notStarted } from "@idempotency/hono";
import { type Context, Hono } from "hono";
import { type AuthEnv, authenticate } from "./auth.js";

export interface Order {
  id: number;
  tenant: string;
  item: string;
  quantity: number;
}

/**
 * An orders API whose `POST /orders` is safe to retry: send an `Idempotency-Key` and a retry gets the stored
 * response instead of creating a second order. Each tenant has its own keys: the scope is the tenant of the
 * authenticated user (`Authorization: Bearer <token>`).
 */
export function createApp(store: IdempotencyStore) {
  const orders = new Map<number, Order>();
  const app = new Hono<AuthEnv>();

  // Authentication runs first, so the guard below can scope keys by the user it verified. Never scope by a
  // header the client chooses (an X-Tenant-Id): any client could then name another tenant and read its replays.
  app.use(authenticate);

  const guard = idempotency({
    store,
    scope: (request) => (request.native as Context<AuthEnv>).get("user").tenantId,
  });

  app.post("/orders", guard, async (c) => {
    const body = (await c.req.json().catch(() => ({}))) as { item?: unknown; quantity?: unknown };
    const { item, quantity = 1 } = body;
    if (typeof item !== "string" || typeof quantity !== "number") {
      notStarted(c); // nothing happened: a corrected retry with the same key may run
      return c.json({ error: 'send {"item": string, "quantity"?: number}' }, 400);
    }
    const order: Order = { id: orders.size + 1, tenant: c.get("user").tenantId, item, quantity };
    orders.set(order.id, order);
    return c.json(order, 201, { Location: `/orders/${order.id}` });
  });

  app.get("/orders/:id", (c) => {
    const order = orders.get(Number(c.req.param("id")));
    return order && order.tenant === c.get("user").tenantId
      ? c.json(order)
      : c.json({ error: "no such order" }, 404);
  });

  return { app, orders };
}
