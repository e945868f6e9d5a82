import { IdempotencyOptionsError } from "@idempotency/core";
import { describe, it } from "vitest";
import { stallCases, storeCases } from "./cases/index.js";
import { caseTimeoutMs, resolveOptions, runStoreCase } from "./harness.js";
import type { DescribeStoreOptions, StoreFactory } from "./options.js";

export type { DescribeStoreOptions, StoreFactory } from "./options.js";

/**
 * Declares the store contract suite: a vitest `describe(name, …)` block with one test per behaviour of
 * `IdempotencyStore` (claims, a 50-way race over independent instances, fencing, leases, takeover, TTL
 * expiry, binary-safe and `null` responses, independent keys, get/delete, the error contract).
 *
 * `factory()` is called several times per test and must return independent instances over the same backing
 * data (separate connections or handles; a store that cannot have two, like `MemoryStore`, returns one
 * shared instance). Every test uses fresh random keys, so tests never interfere and may share a backing
 * store. After each test the suite calls `close()` once on every distinct instance the test obtained.
 *
 * Give `advanceTime` when the store reads a clock the test controls: the suite then never waits. Without it
 * the suite uses short real leases (`realTimeLeaseMs`, default 200 ms) and really waits, about 2.5 seconds
 * in all.
 *
 * @param name The name of the `describe` block, e.g. the store's class name.
 * @param factory Returns an instance of the store under test over the shared backing data.
 * @param options Clock control and the scale of the concurrency and real-time cases.
 *
 * @example
 * ```ts
 * // test/conformance.test.ts of an adapter
 * import { describeStore } from "@idempotency/conformance";
 * import { MemoryStore } from "@idempotency/core";
 *
 * const clock = { t: 1_700_000_000_000 };
 * const store = new MemoryStore({ now: () => clock.t });
 * describeStore("MemoryStore", () => store, { advanceTime: (ms) => void (clock.t += ms) });
 *
 * // A store on its own clock: real leases and waits, a new handle on the same file per instance.
 * describeStore("SqliteStore", () => new SqliteStore({ path: databaseFile }));
 * ```
 */
export function describeStore(name: string, factory: StoreFactory, options: DescribeStoreOptions = {}): void {
  if (typeof factory !== "function") {
    throw new IdempotencyOptionsError(
      "factory",
      "describeStore expects a function returning a store instance.",
    );
  }
  const resolved = resolveOptions(options);
  describe(name, () => {
    const cases = resolved.stall ? [...storeCases, ...stallCases] : storeCases;
    for (const storeCase of cases) {
      it(storeCase.name, () => runStoreCase(storeCase, factory, options), caseTimeoutMs(resolved));
    }
  });
}
