import type { IdempotencyStore } from "@idempotency/core";

/** Options of {@link describeStore}. */
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
}

/** Makes one instance of the store under test; every call must reach the same backing data. */
export type StoreFactory = () => IdempotencyStore | Promise<IdempotencyStore>;

export const DEFAULT_INSTANCES = 5;
export const DEFAULT_CONCURRENCY = 50;
