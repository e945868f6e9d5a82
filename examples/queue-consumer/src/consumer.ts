import { createIdempotency, type IdempotencyStore } from "@idempotency/core";

/** A message as an at-least-once queue delivers it: possibly twice, possibly to two workers at once. */
export interface PaymentMessage {
  id: string;
  tenant: string;
  body: { account: string; amountCents: number };
}

export interface Receipt {
  chargeId: string;
  account: string;
  amountCents: number;
}

/**
 * A consumer that charges each message id exactly once, however often the queue delivers it: the first
 * delivery runs `charge` and stores the receipt; redeliveries get the stored receipt; a concurrent redelivery
 * waits up to 5 s for the first to finish; if `charge` throws, the key is released and a redelivery runs again.
 */
export function createConsumer(options: {
  store: IdempotencyStore;
  charge: (body: PaymentMessage["body"], signal: AbortSignal) => Promise<Receipt>;
}) {
  const idempotency = createIdempotency({ store: options.store, scope: "global", waitMs: 5_000 });
  return (message: PaymentMessage): Promise<Receipt> =>
    idempotency.run(message.id, ({ signal }) => options.charge(message.body, signal), {
      scope: message.tenant, // message ids are unique per tenant
      fingerprint: JSON.stringify(message.body), // the same id with another payload is refused
    });
}
