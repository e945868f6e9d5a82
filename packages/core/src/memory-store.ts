import { IdempotencyOptionsError } from "./errors.js";
import type { BeginArgs, BeginResult, IdempotencyStore, StoredRecord } from "./store.js";

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** The clock, in epoch milliseconds. Pass the same clock as the engine's `now` in tests. Default `Date.now`. */
  now?: () => number;
}

interface Entry {
  fingerprint: string;
  /** The owner token while in flight; `null` once completed. */
  token: string | null;
  response: Uint8Array | null;
  /** Epoch ms at which the lease ends (in flight only). */
  leaseUntil: number;
  /** Epoch ms at which the record counts as absent. */
  expiresAt: number;
}

/** How many entries each operation inspects for expiry, so that sweeping keeps pace with insertion. */
const SWEEP_STEP = 2;

/**
 * An in-process store for tests, single-instance services and development. Every operation is a synchronous
 * check-and-set with no `await` inside, so it is atomic within the process by construction. Expiry is checked
 * on every access; expired records are also swept incrementally (a few per operation), so traffic with
 * unique keys cannot grow memory without bound. Records do not survive a restart and are not shared between
 * processes: use the SQLite, Redis or MongoDB store for that.
 *
 * @example
 * ```ts
 * import { createIdempotency, MemoryStore } from "@idempotency/core";
 *
 * const idempotency = createIdempotency({ store: new MemoryStore(), scope: "global" });
 * ```
 */
export class MemoryStore implements IdempotencyStore {
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;
  #cursor: Iterator<[string, Entry]> | undefined;

  constructor(options: MemoryStoreOptions = {}) {
    if (options.now !== undefined && typeof options.now !== "function") {
      throw new IdempotencyOptionsError("now", "expected a function returning epoch milliseconds.");
    }
    // Read Date.now at call time, so fake timers (vi.setSystemTime) move this store's clock too.
    this.#now = options.now ?? (() => Date.now());
  }

  /** The number of records held, including expired ones not yet swept. */
  get size(): number {
    return this.#entries.size;
  }

  async begin(key: string, args: BeginArgs): Promise<BeginResult> {
    const now = this.#now();
    this.#sweep(now);
    const entry = this.#live(key, now);
    if (entry?.token === null) {
      return { state: "completed", fingerprint: entry.fingerprint, response: copy(entry.response) };
    }
    if (entry && (entry.leaseUntil > now || !args.allowTakeover)) {
      return {
        state: "in-flight",
        fingerprint: entry.fingerprint,
        leaseRemainingMs: Math.max(0, entry.leaseUntil - now),
      };
    }
    this.#entries.delete(key); // re-insert at the end, so the sweep cursor reaches fresh records last
    this.#entries.set(key, {
      fingerprint: args.fingerprint,
      token: args.token,
      response: null,
      leaseUntil: now + args.leaseMs,
      expiresAt: now + Math.max(args.ttlMs, args.leaseMs),
    });
    return { state: "claimed", takeover: entry !== undefined };
  }

  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number): Promise<boolean> {
    const now = this.#now();
    const entry = this.#owned(key, token, now);
    if (!entry) return false;
    entry.token = null;
    entry.response = copy(response);
    entry.expiresAt = now + ttlMs;
    return true;
  }

  async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
    const now = this.#now();
    const entry = this.#owned(key, token, now);
    if (!entry) return false;
    entry.leaseUntil = now + leaseMs;
    entry.expiresAt = Math.max(entry.expiresAt, entry.leaseUntil);
    return true;
  }

  async release(key: string, token: string): Promise<boolean> {
    const entry = this.#owned(key, token, this.#now());
    if (!entry) return false;
    this.#entries.delete(key);
    return true;
  }

  async get(key: string): Promise<StoredRecord | null> {
    const now = this.#now();
    const entry = this.#live(key, now);
    if (!entry) return null;
    const ttlRemainingMs = entry.expiresAt - now;
    if (entry.token === null) {
      return {
        state: "completed",
        fingerprint: entry.fingerprint,
        response: copy(entry.response),
        ttlRemainingMs,
      };
    }
    return {
      state: "in-flight",
      fingerprint: entry.fingerprint,
      token: entry.token,
      leaseRemainingMs: Math.max(0, entry.leaseUntil - now),
      ttlRemainingMs,
    };
  }

  async delete(key: string): Promise<boolean> {
    const live = this.#live(key, this.#now()) !== undefined;
    this.#entries.delete(key);
    return live;
  }

  async close(): Promise<void> {
    this.#entries.clear();
  }

  /** The entry under `key` unless it has expired (an expired one is deleted on the spot). */
  #live(key: string, now: number): Entry | undefined {
    const entry = this.#entries.get(key);
    if (entry && entry.expiresAt <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry;
  }

  #owned(key: string, token: string, now: number): Entry | undefined {
    const entry = this.#live(key, now);
    return entry?.token === token ? entry : undefined;
  }

  /**
   * Inspects the next few entries of a cursor that cycles through the map and deletes the expired ones.
   * Each claim advances the cursor by more than it inserts, so every expired record is found within one
   * lap and memory stays proportional to the live records.
   */
  #sweep(now: number): void {
    for (let i = 0; i < SWEEP_STEP; i++) {
      this.#cursor ??= this.#entries.entries();
      const next = this.#cursor.next();
      if (next.done) {
        this.#cursor = undefined;
        if (this.#entries.size === 0) return;
        continue;
      }
      const [key, entry] = next.value;
      if (entry.expiresAt <= now) this.#entries.delete(key);
    }
  }
}

/** Records never share bytes with callers, as with a store across a network. */
function copy(bytes: Uint8Array | null): Uint8Array | null {
  return bytes === null ? null : bytes.slice();
}
