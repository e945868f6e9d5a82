import { idempotency, idempotencyTransaction } from "@idempotency/express";
import { PostgresStore } from "@idempotency/postgres";
import express, { type RequestHandler } from "express";
import type pg from "pg";
import type { Tables } from "./schema.js";

/**
 * DEMO-ONLY authentication: the tenant comes from a fixed token table. A real service verifies a session, a
 * JWT or an API key; what matters is that the scope comes from verified credentials, never from a value the
 * client picks.
 */
const TOKENS = new Map([
  ["acme-token", "acme"],
  ["globex-token", "globex"],
]);

declare global {
  namespace Express {
    interface Request {
      tenant: string;
    }
  }
}

const authenticate: RequestHandler = (req, res, next) => {
  const token = /^Bearer (\S+)$/i.exec(req.get("authorization") ?? "")?.[1];
  const tenant = token === undefined ? undefined : TOKENS.get(token);
  if (tenant === undefined) {
    res.status(401).set("www-authenticate", "Bearer").json({ error: "send Authorization: Bearer <token>" });
    return;
  }
  req.tenant = tenant;
  next();
};

export interface AppOptions {
  pool: pg.Pool;
  tables: Tables;
  /** Called once the order and its outbox row are written, before COMMIT (the tests crash the process here). */
  afterWrite?: (key: string) => void | Promise<void>;
}

/**
 * `POST /orders`: the order and the outbox row that announces it are written through the request's own
 * transaction, which also holds the idempotency claim and receives the stored response before COMMIT. So
 * an order exists exactly when its key's record does, and its "order-created" event exactly once.
 */
export function createApp({ pool, tables, afterWrite }: AppOptions): express.Express {
  const app = express();
  app.use(authenticate);
  app.post(
    "/orders",
    idempotency({
      store: new PostgresStore({ pool, table: tables.records }),
      scope: (request) => (request.native as express.Request).tenant,
      required: true,
      transactional: true,
      waitMs: 2_000,
    }),
    express.json(),
    async (req, res) => {
      const { item, quantity } = req.body as { item?: unknown; quantity?: unknown };
      if (typeof item !== "string" || !Number.isInteger(quantity) || (quantity as number) < 1) {
        res.status(400).json({ error: "expected { item: string, quantity: positive integer }" });
        return;
      }
      const tx = idempotencyTransaction<pg.PoolClient>(req) as pg.PoolClient;
      const {
        rows: [order],
      } = await tx.query(
        `INSERT INTO ${tables.orders} (tenant, item, quantity) VALUES ($1, $2, $3) RETURNING id, tenant, item, quantity`,
        [req.tenant, item, quantity],
      );
      await tx.query(`INSERT INTO ${tables.outbox} (topic, payload) VALUES ('order-created', $1)`, [
        JSON.stringify({ orderId: order.id, tenant: order.tenant, item, quantity }),
      ]);
      await afterWrite?.(req.get("idempotency-key") ?? "");
      res
        .status(201)
        .location(`/orders/${order.id}`)
        .json({ ...order, id: Number(order.id) });
    },
  );
  return app;
}
