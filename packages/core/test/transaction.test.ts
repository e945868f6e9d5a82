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

describe("the transactional option", () => {
  it("is refused at construction for a store without transactions, naming the store", () => {
    expect(() =>
      createIdempotency({ store: new MemoryStore(), scope: "global", transactional: true }),
    ).toThrow(/Invalid option "transactional": MemoryStore has no transactions/);
  });

  it("is refused for a store whose transactions are synchronous, since a handler is not", () => {
    const store = Object.assign(new MemoryStore(), {
      synchronousTransactions: true,
      transaction: async () => ({ state: "locked" as const }),
    });
    expect(() => createIdempotency({ store, scope: "global", transactional: true })).toThrow(
      /runs only synchronous transactions/,
    );
  });

  it("cannot be combined with failOpen", () => {
    const store = Object.assign(new MemoryStore(), {
      synchronousTransactions: false,
      transaction: async () => ({ state: "locked" as const }),
    });
    expect(() => createIdempotency({ store, scope: "global", transactional: true, failOpen: true })).toThrow(
      /Invalid option "failOpen": cannot be combined with transactional: true/,
    );
  });

  it("must be a boolean", () => {
    expect(() =>
      createIdempotency({ store: new MemoryStore(), scope: "global", transactional: "yes" as never }),
    ).toThrow(IdempotencyOptionsError);
  });
});
