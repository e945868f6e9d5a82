import type { IdempotencyStore } from "@idempotency/core";

/**
 * Options of {@link describeStore}: how the suite moves the store's clock, and the scale of its real-time and
 * concurrency cases. All are optional; give `advanceTime` whenever the test controls the store's clock.
 *
 * @example
 * ```ts
 * import { type DescribeStoreOptions, describeStore } from "@idempotency/conformance";
 * import { SqliteStore } from "@idempotency/sqlite";
 *
 * // Longer real-time leases for a slow CI disk, and a smaller race.
 * const options: DescribeStoreOptions = { realTimeLeaseMs: 500, concurrency: 20 };
 * describeStore("SqliteStore", () => new SqliteStore({ path: databaseFile }), options);
 * ```
 */
export interface DescribeStoreOptions {
  /**
   * Moves the store's clock forward by `ms`. Give it when the store reads a clock the test controls
   * (e.g. `MemoryStore({ now })`). Without it the suite uses short real leases/TTLs and real waits
   * (stores on a server clock: Redis, MongoDB, SQLite with its own clock).
   */
  advanceTime?: (ms: number) => void | Promise<void>;
  /** Lease/TTL scale used in real-time mode (default leaseMs 200, ttlMs 600, with generous margins). */
  realTimeLeaseMs?: number;
  /** How many independent instances to spread concurrency cases over (default 5). */
  instances?: number;
  /** Concurrent begins in the race case (default 50). */
  concurrency?: number;
  /**
   * Makes the backing store stop applying commands for `ms` from now, as a paused or overloaded server does,
   * and resolves once the stall has begun (Redis: `CLIENT PAUSE <ms> WRITE` from another connection). Give it
   * when the store enforces the caller's deadline where commands apply (`StoreCallOptions.timeoutMs`): the
   * suite then also proves that a `begin` the caller gave up on never applies later. Without it that case is
   * not declared (a store that cannot refuse a late command has nothing to prove there).
   */
  stall?: (ms: number) => void | Promise<void>;
}

/**
 * Makes one instance of the store under test, the second argument of {@link describeStore}. Every call must
 * reach the same backing data, through its own connection or handle where the store can have several.
 *
 * @example
 * ```ts
 * import { describeStore, type StoreFactory } from "@idempotency/conformance";
 * import { SqliteStore } from "@idempotency/sqlite";
 *
 * // A new handle on the same file per call, so the race cases run over independent instances.
 * const factory: StoreFactory = () => new SqliteStore({ path: databaseFile });
 * describeStore("SqliteStore", factory);
 * ```
 */
export type StoreFactory = () => IdempotencyStore | Promise<IdempotencyStore>;

export const DEFAULT_INSTANCES = 5;
export const DEFAULT_CONCURRENCY = 50;
