import type { IdempotencyStore } from "@idempotency/core";
import { idempotency, notStarted } from "@idempotency/express";
import express, { type Express, type Request } from "express";
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
 * authenticated user (`Authorization: Bearer <token>`).
 */
export function createApp(store: IdempotencyStore): { app: Express; orders: Map<number, Order> } {
  const orders = new Map<number, Order>();
  const app = express();

  // Authentication runs first, so the guard below can scope keys by the user it verified. Never scope by a
  // header the client chooses (an X-Tenant-Id): any client could then name another tenant and read its replays.
  app.use(authenticate);

  const guard = idempotency({
    store,
    scope: (request) => (request.native as Request).user.tenantId,
    required: true, // a POST without a key is refused (400) rather than run unprotected
  });

  app.post("/orders", guard, express.json(), (req, res) => {
    const { tenantId } = req.user;
    const { item, quantity = 1 } = (req.body ?? {}) as { item?: unknown; quantity?: unknown };
    if (typeof item !== "string" || typeof quantity !== "number") {
      notStarted(req); // nothing happened: a corrected retry with the same key may run
      res.status(400).json({ error: 'send {"item": string, "quantity"?: number}' });
      return;
    }
    const order: Order = { id: orders.size + 1, tenant: tenantId, item, quantity };
    orders.set(order.id, order);
    res.status(201).location(`/orders/${order.id}`).json(order);
  });

  app.get("/orders/:id", (req, res) => {
    const order = orders.get(Number(req.params.id));
    if (order && order.tenant === req.user.tenantId) res.json(order);
    else res.status(404).json({ error: "no such order" });
  });

  return { app, orders };
}
