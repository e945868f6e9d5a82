import type { IdempotencyStore } from "@idempotency/core";
import { idempotency } from "@idempotency/express";
import express, { type Express } from "express";

export interface Payment {
  id: string;
  invoice: string;
  amount: number;
}

/**
 * A payments API whose `POST /payments` is safe to retry: a retry with the same `Idempotency-Key` gets the
 * stored response instead of charging again. `payments` is the side effect, so a reader can count it.
 */
export function createApp(store: IdempotencyStore): { app: Express; payments: Payment[] } {
  const payments: Payment[] = [];
  const app = express();
  const guard = idempotency({
    store,
    scope: "global", // single tenant, random keys
    waitMs: 2_000, // a duplicate that arrives while the first still runs waits for its result (no 409)
  });

  app.post("/payments", guard, express.json(), (req, res) => {
    const { invoice, amount } = req.body as { invoice?: unknown; amount?: unknown };
    if (typeof invoice !== "string" || typeof amount !== "number") {
      res.status(400).json({ error: 'send {"invoice": string, "amount": number}' });
      return;
    }
    const payment: Payment = { id: `pay_${payments.length + 1}`, invoice, amount };
    payments.push(payment); // the side effect that must happen once
    res.status(201).location(`/payments/${payment.id}`).json(payment);
  });

  return { app, payments };
}
