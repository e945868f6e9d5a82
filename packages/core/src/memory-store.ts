import { IdempotencyOptionsError } from "./errors.js";
import { checkOptionNames, wholeNumberOption } from "./options.js";
import {
  type BeginArgs,
  type BeginResult,
  decideBegin,
  type HeldRecord,
  type IdempotencyStore,
  type StoredRecord,
} from "./store.js";

/**
 * Options of {@link MemoryStore}: its clock, and an optional bound on the number of records. In tests, give
 * the store and the engine the same `now`, so that moving the clock expires leases and records in both.
 *
 * @example
 * ```ts
 * import { createIdempotency, MemoryStore, type MemoryStoreOptions } from "@idempotency/core";
 *
 * let clock = Date.parse("2025-01-01T00:00:00Z");
 * const options: MemoryStoreOptions = { now: () => clock, maxEntries: 10_000 };
 * const store = new MemoryStore(options);
 * const idempotency = createIdempotency({ store, scope: "global", now: () => clock });
 * clock += 30_000; // leases taken before this line have now expired
 * ```
 */
export interface MemoryStoreOptions {
  /** The clock, in epoch milliseconds. Pass the same clock as the engine's `now` in tests. Default `Date.now`. */
  now?: () => number;
  /**
   * The most records to hold. Beyond it, the least recently used *completed* record is evicted (an in-flight
   * claim never is, so a bound can never cause two concurrent executions). An evicted key behaves as new: a
   * late retry runs again, so size the bound well above the keys retried within your retry window.
   * Default: no bound (expired records are still swept).
   */
  maxEntries?: number;
}

interface InFlight extends HeldRecord {
  readonly token: string;
  readonly response: null;
  /** Epoch ms at which the lease ends. */
  leaseUntil: number;
  /** Epoch ms at which the record counts as absent. */
  expiresAt: number;
}

interface Completed extends HeldRecord {
  readonly token: null;
  /** Always `null`: the response is kept in `kept`, and handed out as fresh bytes. */
  readonly response: null;
  /** The response bytes as the record keeps them (see {@link keep}); `null`: completed without a body. */
  readonly kept: Kept | null;
}

/** How many records each operation inspects for expiry, so that sweeping keeps pace with insertion. */
const SWEEP_STEP = 2;

/**
 * An in-process store for tests, single-instance services and development. Every operation is a synchronous
 * check-and-set with no `await` inside, so it is atomic within the process by construction. Expiry is checked
 * on every access; expired records are also swept incrementally (a few per operation), so traffic with
 * unique keys cannot grow memory without bound, and `maxEntries` caps it outright. Records do not survive a
 * restart and are not shared between processes: use `SqliteStore` or `RedisStore` for that.
 *
 * @example
 * ```ts
 * import { createIdempotency, MemoryStore } from "@idempotency/core";
 *
 * const idempotency = createIdempotency({
 *   store: new MemoryStore({ maxEntries: 100_000 }),
 *   scope: "global",
 * });
 * ```
 */
export class MemoryStore implements IdempotencyStore {
  readonly #inFlight = new Map<string, InFlight>();
  /** In least-recently-used order: a replay or a completion moves a record to the end. */
  readonly #completed = new Map<string, Completed>();
  readonly #now: () => number;
  readonly #maxEntries: number;
  #inFlightCursor: Iterator<[string, InFlight]> | undefined;
  #completedCursor: Iterator<[string, Completed]> | undefined;
  /**
   * Kept across calls: a fresh Map iterator starts at the head and steps over every deleted slot before it,
   * which made each eviction cost O(evicted so far) until the map rehashed.
   */
  #evictCursor: Iterator<string> | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    checkOptionNames(options, ["now", "maxEntries"], "an object such as { maxEntries: 100_000 }");
    if (options.now !== undefined && typeof options.now !== "function") {
      throw new IdempotencyOptionsError("now", "expected a function returning epoch milliseconds.");
    }
    const maxEntries =
      options.maxEntries === Number.POSITIVE_INFINITY
        ? options.maxEntries
        : wholeNumberOption("maxEntries", options.maxEntries, {
            min: 1,
            unit: "records",
            fallback: Number.POSITIVE_INFINITY,
          });
    // Read Date.now at call time, so fake timers (vi.setSystemTime) move this store's clock too.
    this.#now = options.now ?? (() => Date.now());
    this.#maxEntries = maxEntries;
  }

  /** The number of records held, including expired ones not yet swept. */
  get size(): number {
    return this.#inFlight.size + this.#completed.size;
  }

  async begin(key: string, args: BeginArgs): Promise<BeginResult> {
    const now = this.#now();
    this.#sweep(now);
    const done = this.#liveCompleted(key, now);
    const decision = decideBegin(done ?? this.#liveInFlight(key, now), now, args.allowTakeover);
    if (done && decision.state === "completed") {
      this.#completed.delete(key); // touched: now the most recently used
      this.#completed.set(key, done);
      decision.response = handOut(done.kept);
    }
    if (decision.state !== "claimed") return decision;
    this.#inFlight.delete(key); // re-insert at the end, so the sweep cursor reaches fresh records last
    this.#inFlight.set(key, {
      fingerprint: args.fingerprint,
      token: args.token,
      leaseUntil: now + args.leaseMs,
      expiresAt: now + Math.max(args.ttlMs, args.leaseMs),
      response: null,
    });
    this.#evict();
    return decision;
  }

  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number): Promise<boolean> {
    const now = this.#now();
    const running = this.#owned(key, token, now);
    if (!running) return false;
    this.#inFlight.delete(key);
    this.#completed.set(key, {
      fingerprint: running.fingerprint,
      token: null,
      leaseUntil: 0,
      response: null,
      kept: keep(response),
      expiresAt: now + ttlMs,
    });
    return true;
  }

  async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
    const now = this.#now();
    const running = this.#owned(key, token, now);
    if (!running) return false;
    running.leaseUntil = now + leaseMs;
    running.expiresAt = Math.max(running.expiresAt, running.leaseUntil);
    return true;
  }

  async release(key: string, token: string): Promise<boolean> {
    if (!this.#owned(key, token, this.#now())) return false;
    this.#inFlight.delete(key);
    return true;
  }

  async get(key: string): Promise<StoredRecord | null> {
    const now = this.#now();
    const done = this.#liveCompleted(key, now);
    if (done) {
      return {
        state: "completed",
        fingerprint: done.fingerprint,
        response: handOut(done.kept),
        ttlRemainingMs: done.expiresAt - now,
      };
    }
    const running = this.#liveInFlight(key, now);
    if (!running) return null;
    return {
      state: "in-flight",
      fingerprint: running.fingerprint,
      token: running.token,
      leaseRemainingMs: Math.max(0, running.leaseUntil - now),
      ttlRemainingMs: running.expiresAt - now,
    };
  }

  async delete(key: string): Promise<boolean> {
    const now = this.#now();
    const live = this.#liveCompleted(key, now) !== undefined || this.#liveInFlight(key, now) !== undefined;
    this.#completed.delete(key);
    this.#inFlight.delete(key);
    return live;
  }

  async close(): Promise<void> {
    this.#inFlight.clear();
    this.#completed.clear();
    // A live Map iterator keeps the table it was made on, and a cleared table keeps its entries until the
    // iterator moves on: without this, the sweep and eviction cursors held every record closed here.
    this.#inFlightCursor = undefined;
    this.#completedCursor = undefined;
    this.#evictCursor = undefined;
  }

  /** The completed record under `key` unless it has expired (an expired one is deleted on the spot). */
  #liveCompleted(key: string, now: number): Completed | undefined {
    const record = this.#completed.get(key);
    if (record && record.expiresAt <= now) {
      this.#completed.delete(key);
      return undefined;
    }
    return record;
  }

  /** The in-flight record under `key` unless it has expired (an expired one is deleted on the spot). */
  #liveInFlight(key: string, now: number): InFlight | undefined {
    const record = this.#inFlight.get(key);
    if (record && record.expiresAt <= now) {
      this.#inFlight.delete(key);
      return undefined;
    }
    return record;
  }

  #owned(key: string, token: string, now: number): InFlight | undefined {
    const running = this.#liveInFlight(key, now);
    return running?.token === token ? running : undefined;
  }

  /** Drops least recently used completed records while over `maxEntries`; O(1) each, from the map's head. */
  #evict(): void {
    while (this.size > this.#maxEntries) {
      if (this.#completed.size === 0) return; // only in-flight claims left: they are never evicted
      this.#evictCursor ??= this.#completed.keys();
      const oldest = this.#evictCursor.next();
      if (oldest.done) {
        this.#evictCursor = undefined;
        continue;
      }
      this.#completed.delete(oldest.value);
    }
  }

  /**
   * Inspects the next few records of each map, resuming where the last call stopped, and deletes expired
   * ones. Amortised O(1) per operation, and every record is visited once per pass over the map.
   */
  #sweep(now: number): void {
    this.#inFlightCursor = sweepStep(this.#inFlight, this.#inFlightCursor, now);
    this.#completedCursor = sweepStep(this.#completed, this.#completedCursor, now);
  }
}

function sweepStep<T extends { expiresAt: number }>(
  map: Map<string, T>,
  cursor: Iterator<[string, T]> | undefined,
  now: number,
): Iterator<[string, T]> | undefined {
  let current = cursor;
  for (let i = 0; i < SWEEP_STEP && map.size > 0; i++) {
    current ??= map.entries();
    const next = current.next();
    if (next.done) {
      current = undefined;
      continue;
    }
    const [key, record] = next.value;
    if (record.expiresAt <= now) map.delete(key);
  }
  return current;
}

/** A response as a record keeps it: small ones as a latin1 string (one byte per character), larger as bytes. */
type Kept = string | Uint8Array;

/** Below this size a kept response is a string; at or above it, bytes of its own. */
const KEPT_AS_STRING_BELOW = 16_384;

/**
 * The record's own copy of a response: exactly its bytes, in memory nothing else shares, so the caller may
 * reuse its buffer (`Buffer#slice` would be a view of it) and a long-lived record pins nothing larger. A small
 * response is kept as a latin1 string: an ordinary heap object, much cheaper to make and to collect than memory
 * of its own (an `ArrayBuffer` per record cost more than the rest of `complete`), and immutable.
 */
function keep(bytes: Uint8Array | null): Kept | null {
  if (bytes === null) return null;
  if (bytes.length >= KEPT_AS_STRING_BELOW) return new Uint8Array(bytes);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/**
 * A copy for a reader, who may change it without changing the record. Short-lived, so small ones come from
 * Node's shared buffer pool, which is much cheaper than memory of their own.
 */
function handOut(kept: Kept | null): Uint8Array | null {
  if (kept === null) return null;
  let out: Buffer;
  if (typeof kept === "string") out = Buffer.from(kept, "latin1");
  else {
    out = Buffer.allocUnsafe(kept.length);
    out.set(kept);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
