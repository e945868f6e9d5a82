import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteStore } from "@idempotency/sqlite";
import { createConsumer, type PaymentMessage, type Receipt } from "./consumer.js";

// Two workers (two stores over one SQLite file, as two processes would have) share a ledger.
const dir = mkdtempSync(join(tmpdir(), "queue-consumer-"));
const path = join(dir, "idempotency.db");
const stores = [new SqliteStore({ path }), new SqliteStore({ path })];
const ledger: Receipt[] = [];
let flaky = true;

async function charge(body: PaymentMessage["body"]): Promise<Receipt> {
  await new Promise((resolve) => setTimeout(resolve, 20)); // the payment provider's latency
  if (body.account === "acct-3" && flaky) {
    flaky = false;
    throw new Error("payment provider timed out");
  }
  const receipt = { chargeId: `ch_${ledger.length + 1}`, ...body };
  ledger.push(receipt);
  return receipt;
}

const workers = stores.map((store) => createConsumer({ store, charge }));
const messages: PaymentMessage[] = [1, 2, 3, 4, 5].map((n) => ({
  id: `msg-${n}`,
  tenant: "acme",
  body: { account: `acct-${n}`, amountCents: n * 100 },
}));

// The queue delivers every message three times, to both workers at once.
const deliveries = messages.flatMap((message) => [0, 1, 2].map((i) => ({ message, worker: i % 2 })));
const results = await Promise.allSettled(
  deliveries.map(({ message, worker }) =>
    (workers[worker] as (m: PaymentMessage) => Promise<Receipt>)(message),
  ),
);
const failed = results.filter((result) => result.status === "rejected").length;
console.log(
  `${deliveries.length} deliveries of ${messages.length} messages: ${failed} failed (to be redelivered)`,
);

// The queue redelivers what failed: only the flaky charge runs again.
for (const message of messages) await (workers[0] as (m: PaymentMessage) => Promise<Receipt>)(message);
console.log(`charges made: ${ledger.length} (one per message)`);
for (const receipt of ledger) console.log(`  ${receipt.chargeId} ${receipt.account} ${receipt.amountCents}`);

await Promise.all(stores.map((store) => store.close()));
rmSync(dir, { recursive: true, force: true });
process.exitCode = ledger.length === messages.length ? 0 : 1;
