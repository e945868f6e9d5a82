import type { IdempotencyStore } from "@idempotency/core";
import { idempotency } from "@idempotency/express";
import express, { type Express, type Request, type RequestHandler } from "express";
import { authenticate } from "./auth.js";
import { idempotencyTelemetry, type TelemetryOptions } from "./telemetry.js";

export interface Order {
  id: number;
  tenant: string;
  item: string;
}

export interface AppOptions extends TelemetryOptions {
  store: IdempotencyStore;
  /** The side effect: charging for the order. Default: done at once. */
  charge?: (order: Order) => Promise<void>;
  /** Mounted first, before authentication (in the test: the HTTP server span). */
  before?: RequestHandler[];
  /** The engine's clock (default `Date.now`); the test shares one fake clock with the store and telemetry. */
  clock?: () => number;
}

/** An orders API whose `POST /orders` is guarded, with every idempotency event logged, traced and counted. */
export function createApp(options: AppOptions): { app: Express; orders: Order[] } {
  const orders: Order[] = [];
  const telemetry = idempotencyTelemetry(options);
  const charge = options.charge ?? (async () => {});
  const app = express();

  if (options.before?.length) app.use(...options.before);
  app.use(authenticate); // req.user, before the guard: the scope is never a header the client chooses

  const guard = idempotency({
    store: telemetry.instrumentStore(options.store), // every store call timed
    scope: (request) => (request.native as Request).user.tenantId,
    onEvent: telemetry.onEvent, // every event logged, traced and counted
    ...(options.clock ? { now: options.clock } : {}),
  });

  app.post("/orders", guard, express.json(), async (req, res) => {
    const order: Order = { id: orders.length + 1, tenant: req.user.tenantId, item: String(req.body?.item) };
    orders.push(order);
    await charge(order);
    res.status(201).location(`/orders/${order.id}`).json(order);
  });

  return { app, orders };
}
