/**
 * `@idempotency/core/testing`: a store for tests of the engine, of a binding or of an application that uses
 * the library. It runs on a real store (a `MemoryStore` unless you pass another) and adds what a test needs
 * to see and to break: call counts, a log of every call with its deadline, a switch that takes the store
 * down, failures for the next N calls, calls that never answer, delays, a gate that holds calls until the
 * test lets them run, and owners whose lease renewals stop arriving (a frozen or dead process).
 */
import { IdempotencyStoreError } from "./errors.js";
import { MemoryStore } from "./memory-store.js";
import type { IdempotencyStore } from "./store.js";
import { type StoreCall, type StoreOperation, wrapStore } from "./wrap-store.js";

/**
 * The store {@link instrumentedStore} returns: an `IdempotencyStore` and the instruments that observe and
 * break it. Every instrument is a plain field the test changes as it goes.
 *
 * @example
 * ```ts
 * import { instrumentedStore } from "@idempotency/core/testing";
 *
 * const store = instrumentedStore();
 * const idempotency = createIdempotency({ store, scope: "global" });
 * store.down = true; // every call now fails: a request gets 503
 * expect(store.calls.begin).toBe(1);
 * ```
 */
export interface InstrumentedStore extends IdempotencyStore {
  /** The store the calls run on. Give two instrumented stores the same one to model two processes. */
  readonly inner: IdempotencyStore;
  /** How many calls each operation received (a silenced renewal is not one: it never arrived). */
  readonly calls: Record<StoreOperation, number>;
  /** Every call received, in order, with its arguments and the caller's deadline. */
  readonly log: StoreCall[];
  /** The sum of {@link calls}. */
  readonly totalCalls: number;
  /** While `true`, every call throws `IdempotencyStoreError` ("connect ECONNREFUSED"), as a store that is down. */
  down: boolean;
  /** The next N calls of an operation throw `IdempotencyStoreError` ("read ECONNRESET"), then it works again. */
  readonly failures: Partial<Record<StoreOperation, number>>;
  /** Calls of these operations never answer, as a store behind a stalled connection. */
  readonly hanging: Set<StoreOperation>;
  /** Calls of an operation wait this many milliseconds (on the timers, fake or real) before they run. */
  readonly delays: Partial<Record<StoreOperation, number>>;
  /**
   * When set, every call that reaches the store is handed to `gate` as `run`, and runs only when the gate
   * calls it: a test that decides the order in which concurrent calls land.
   */
  gate: ((run: () => void) => void) | undefined;
  /** Resolves once `operation` has received at least `count` calls. */
  whenCalled(operation: StoreOperation, count: number): Promise<void>;
  /**
   * From now on, the renewals (`extend`) of the owner that last claimed `key` never reach the store and
   * answer `true`, as the store sees a process that froze or died; a later owner is heard again.
   */
  silenceOwnerOf(key: string): void;
}

/**
 * An {@link InstrumentedStore} over `inner` (default: a new `MemoryStore`).
 *
 * @example
 * ```ts
 * import { MemoryStore } from "@idempotency/core";
 * import { instrumentedStore } from "@idempotency/core/testing";
 *
 * const shared = new MemoryStore();
 * const processA = instrumentedStore(shared);
 * const processB = instrumentedStore(shared); // same records, its own counts and faults
 * processA.failures.complete = 1; // the next complete fails once
 * ```
 */
export function instrumentedStore(inner: IdempotencyStore = new MemoryStore()): InstrumentedStore {
  const waiters: Array<{ operation: StoreOperation; count: number; resolve: () => void }> = [];
  const owners = new Map<string, string>();
  const silenced = new Set<string>();

  const wrapped = wrapStore(inner, async (call, proceed) => {
    if (call.operation === "extend" && silenced.has(call.token)) return true;
    store.calls[call.operation]++;
    store.log.push(call);
    for (const waiter of [...waiters]) {
      if (waiter.operation === call.operation && store.calls[call.operation] >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
    if (store.down) throw failure(call.operation, "connect ECONNREFUSED 127.0.0.1:6379");
    const failures = store.failures[call.operation] ?? 0;
    if (failures > 0) {
      store.failures[call.operation] = failures - 1;
      throw failure(call.operation, "read ECONNRESET");
    }
    if (store.hanging.has(call.operation)) return new Promise<never>(() => {});
    const delay = store.delays[call.operation] ?? 0;
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    const gate = store.gate;
    const answer = gate === undefined ? proceed() : new Promise((resolve) => gate(() => resolve(proceed())));
    const result = await answer;
    if (call.operation === "begin" && (result as { state?: string }).state === "claimed") {
      owners.set(call.key, call.args.token);
    }
    return result;
  });

  const store: InstrumentedStore = {
    ...wrapped,
    inner,
    calls: { begin: 0, complete: 0, extend: 0, release: 0, get: 0, delete: 0 },
    log: [],
    get totalCalls() {
      return Object.values(store.calls).reduce((sum, count) => sum + count, 0);
    },
    down: false,
    failures: {},
    hanging: new Set(),
    delays: {},
    gate: undefined,
    whenCalled(operation, count) {
      if (store.calls[operation] >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ operation, count, resolve }));
    },
    silenceOwnerOf(key) {
      const token = owners.get(key);
      if (token !== undefined) silenced.add(token);
    },
  };
  return store;
}

function failure(operation: StoreOperation, reason: string): IdempotencyStoreError {
  return new IdempotencyStoreError(`Store ${operation} failed: ${reason}`, { cause: new Error(reason) });
}
