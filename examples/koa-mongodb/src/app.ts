import type { IdempotencyStore } from "@idempotency/core";
import { idempotency, notStarted } from "@idempotency/koa";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import Koa, { type ParameterizedContext } from "koa";
import { type AuthState, authenticate } from "./auth.js";

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
  const app = new Koa<AuthState>();
  const router = new Router<AuthState>();

  // Authentication runs first, so the guard below can scope keys by the user it verified. Never scope by a
  // header the client chooses (an X-Tenant-Id): any client could then name another tenant and read its replays.
  app.use(authenticate);

  const guard = idempotency({
    store,
    scope: (request) => (request.native as ParameterizedContext<AuthState>).state.user.tenantId,
    waitMs: 2_000, // a duplicate that arrives while the first runs waits for its result instead of a 409
  });

  router.post("/orders", guard, bodyParser(), async (ctx) => {
    const { item, quantity = 1 } = (ctx.request.body ?? {}) as { item?: unknown; quantity?: unknown };
    if (typeof item !== "string" || typeof quantity !== "number") {
      notStarted(ctx); // nothing happened: a corrected retry with the same key may run
      ctx.status = 400;
      ctx.body = { error: 'send {"item": string, "quantity"?: number}' };
      return;
    }
    const order: Order = { id: orders.size + 1, tenant: ctx.state.user.tenantId, item, quantity };
    orders.set(order.id, order);
    ctx.status = 201;
    ctx.set("Location", `/orders/${order.id}`);
    ctx.body = order;
  });

  router.get("/orders/:id", (ctx) => {
    const order = orders.get(Number(ctx.params.id));
    const visible = order && order.tenant === ctx.state.user.tenantId;
    ctx.status = visible ? 200 : 404;
    ctx.body = visible ? order : { error: "no such order" };
  });

  app.use(router.routes()).use(router.allowedMethods());
  return { app, orders };
}
