import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IdempotencyKeyReusedError } from "@idempotency/core";
import { SqliteStore } from "@idempotency/sqlite";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createConsumer, type PaymentMessage, type Receipt } from "../src/consumer.js";

let dir: string;
let stores: SqliteStore[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "queue-consumer-test-"));
  const path = join(dir, "idempotency.db");
  stores = [new SqliteStore({ path }), new SqliteStore({ path })];
});

afterEach(async () => {
  await Promise.all(stores.map((store) => store.close()));
  rmSync(dir, { recursive: true, force: true });
});

const message = (n: number, amountCents = n * 100): PaymentMessage => ({
  id: `msg-${n}`,
  tenant: "acme",
  body: { account: `acct-${n}`, amountCents },
});

it("charges each message once across redeliveries to two workers, and retries a failed charge", async () => {
  const ledger: Receipt[] = [];
  let failNext = true;
  const charge = async (body: PaymentMessage["body"]) => {
    await new Promise((resolve) => setTimeout(resolve, 10));
    if (body.account === "acct-2" && failNext) {
      failNext = false;
      throw new Error("provider timeout");
    }
    const receipt = { chargeId: `ch_${ledger.length + 1}`, ...body };
    ledger.push(receipt);
    return receipt;
  };
  const workers = stores.map((store) => createConsumer({ store, charge }));
  const deliveries = [1, 2, 3].flatMap((n) =>
    [0, 1, 0, 1].map((w) => (workers[w] ?? workers[0])!(message(n))),
  );
  const settled = await Promise.allSettled(deliveries);
  const rejected = settled.filter((result) => result.status === "rejected");
  expect(rejected.length).toBeGreaterThanOrEqual(1); // the failed charge and whoever waited on it
  for (const result of rejected)
    expect((result as PromiseRejectedResult).reason.message).toBe("provider timeout");

  const redelivered = await Promise.all([1, 2, 3].map((n) => workers[1]!(message(n))));
  expect(ledger.map((receipt) => receipt.account).sort()).toEqual(["acct-1", "acct-2", "acct-3"]);
  expect(redelivered.map((receipt) => receipt.account)).toEqual(["acct-1", "acct-2", "acct-3"]);
  for (const receipt of redelivered) expect(ledger).toContainEqual(receipt);
});

it("refuses the same message id with a different payload", async () => {
  const consume = createConsumer({
    store: stores[0]!,
    charge: async (body) => ({ chargeId: "ch_1", ...body }),
  });
  await consume(message(7));
  await expect(consume(message(7, 999))).rejects.toBeInstanceOf(IdempotencyKeyReusedError);
});
