import { describe, expect, it } from "vitest";
import {
  createIdempotency,
  IdempotencyInvalidKeyError,
  IdempotencyOptionsError,
  isTransactionalStore,
  MemoryStore,
} from "../src/index.js";

// The transactions themselves run against real databases: packages/postgres/test/transaction.test.ts and
// packages/sqlite/test/transaction.test.ts. Here: what the engine checks before any store is involved.
describe("transaction() before any store call", () => {
  const memory = () => createIdempotency({ store: new MemoryStore(), scope: "global" });

  it("refuses a store without transactions, naming the stores that have them, and runs nothing", async () => {
    let ran = false;
    const call = memory().transaction("k", () => {
      ran = true;
    });
    await expect(call).rejects.toMatchObject({
      code: "ERR_IDEMPOTENCY_NO_TRANSACTIONS",
      message: expect.stringMatching(
        /PostgresStore, SqliteStore\); MemoryStore has none\. Use run\(\) instead\./,
      ),
    });
    expect(ran).toBe(false);
    expect(isTransactionalStore(new MemoryStore())).toBe(false);
  });

  it("checks the key, the function and the options as run() does, naming transaction()", async () => {
    await expect(memory().transaction("", () => 1)).rejects.toThrow(IdempotencyInvalidKeyError);
    await expect(memory().transaction("", () => 1)).rejects.toThrow(/^transaction\(\) needs a key/);
    await expect(memory().transaction("k", "nope" as never)).rejects.toThrow(
      "transaction() needs a function to protect as its second argument; got string.",
    );
    await expect(memory().transaction("k", () => 1, { wait: 5 } as never)).rejects.toThrow(
      IdempotencyOptionsError,
    );
    const scoped = createIdempotency({ store: new MemoryStore(), scope: () => "tenant" });
    await expect(scoped.transaction("k", () => 1)).rejects.toThrow(/transaction\(\) needs \{ scope \}/);
  });
});
