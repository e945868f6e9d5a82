/**
 * The storage contract. It is intent-level: every state change is one atomic operation on one record,
 * fenced by the owner token of the request that claimed it. Durations are milliseconds, measured on the
 * store's own clock. Keys reach a store already hashed (64 hex characters) and responses as opaque bytes
 * encoded by the core.
 *
 * Run `describeStore` from `@idempotency/conformance` against any implementation: it is the definition of a
 * correct store.
 */

/**
 * Arguments of {@link IdempotencyStore.begin}.
 *
 * @example
 * ```ts
 * await store.begin(key, { token: randomUUID(), fingerprint, leaseMs: 30_000, ttlMs: 86_400_000, allowTakeover: true });
 * ```
 */
export interface BeginArgs {
  /** A fresh random owner token for this attempt. */
  token: string;
  /** The request fingerprint, e.g. `"xxh3-128:…"`, stored with the claim and returned to duplicates. */
  fingerprint: string;
  /** How long the claim is held without renewal. */
  leaseMs: number;
  /** How long the record lives (in flight or completed) before it counts as absent. */
  ttlMs: number;
  /** Whether a record whose lease has expired (but whose TTL has not) may be claimed by this token. */
  allowTakeover: boolean;
}

/**
 * The last argument of every store method: how long the caller waits for this call. The engine passes its
 * `storeTimeoutMs` and treats the call as failed once that much time has passed, even if the store applies it
 * later. So a store that can enforce a deadline where the operation is applied (a Redis script comparing the
 * server clock, MongoDB's `maxTimeMS`, a statement timeout) must enforce this one: a call the caller gave up
 * on must never apply late, or a `begin` that "failed" would hold the key for a whole lease. It is a
 * duration, measured from the moment the method is called, so no clock has to agree with another. Optional:
 * a store called directly (tests, scripts) without it falls back to its own default.
 *
 * @example
 * ```ts
 * await store.begin(key, args, { timeoutMs: 2_000 });
 * await store.complete(key, token, response, ttlMs, { timeoutMs: 2_000 });
 * ```
 */
export interface StoreCallOptions {
  /** The caller gives up on the call this many milliseconds after making it. */
  timeoutMs: number;
}

/**
 * What {@link IdempotencyStore.begin} found, after atomically claiming the key when it could.
 *
 * @example
 * ```ts
 * const result = await store.begin(key, args);
 * if (result.state === "claimed") runTheHandler();
 * else if (result.state === "in-flight") retryAfter(result.leaseRemainingMs);
 * else replay(result.response);
 * ```
 */
export type BeginResult =
  /** This token now owns the record. `takeover`: it replaced an in-flight record whose lease had expired. */
  | { state: "claimed"; takeover: boolean }
  /** Another token owns the record. `leaseRemainingMs` is 0 when the lease has expired. */
  | { state: "in-flight"; fingerprint: string; leaseRemainingMs: number }
  /** The record is completed. `response` is `null` when it was completed without a body. */
  | { state: "completed"; fingerprint: string; response: Uint8Array | null };

/**
 * A record as a store that decides `begin` in JavaScript reads it: the shape {@link decideBegin} takes. An
 * in-flight record has its owner's `token`; a completed one has `token: null` and its `response`.
 *
 * @example
 * ```ts
 * const row: HeldRecord = { fingerprint: "none", token: null, leaseUntil: 0, expiresAt: Date.now() + 60_000, response: null };
 * ```
 */
export interface HeldRecord {
  readonly fingerprint: string;
  /** The owner token while in flight; `null` once completed. */
  readonly token: string | null;
  /** Epoch ms at which the lease ends (meaningless once completed). */
  readonly leaseUntil: number;
  /** Epoch ms at which the record counts as absent. */
  readonly expiresAt: number;
  /** The stored response once completed. */
  readonly response: Uint8Array | null;
}

/**
 * The `begin` decision every store makes, for stores that make it in JavaScript (inside one transaction or
 * one synchronous step, after reading the record under the key): no record or an expired one → claim; a
 * completed record → return it; an in-flight one → return it, unless its lease has expired and the caller
 * allows a takeover → claim, as a takeover. A `claimed` answer means: now write the claim, in the same atomic
 * step, and return this answer. Stores that decide in their own language (a Lua script, one SQL statement, a
 * MongoDB pipeline) encode the same three rules there.
 *
 * @param record - the record under the key as read in the atomic step, or `undefined` when there is none
 * @param now - the store's clock, epoch ms, read inside the atomic step
 * @param allowTakeover - `BeginArgs.allowTakeover`
 *
 * @example
 * ```ts
 * import { decideBegin } from "@idempotency/core";
 *
 * const begin = db.transaction((key: string, args: BeginArgs) => {
 *   const now = Date.now();
 *   const decision = decideBegin(select.get(key), now, args.allowTakeover);
 *   if (decision.state === "claimed") insertOrReplace.run(key, args, now);
 *   return decision;
 * });
 * ```
 */
export function decideBegin(
  record: HeldRecord | undefined,
  now: number,
  allowTakeover: boolean,
): BeginResult {
  if (record === undefined || record.expiresAt <= now) return { state: "claimed", takeover: false };
  if (record.token === null) {
    return { state: "completed", fingerprint: record.fingerprint, response: record.response };
  }
  if (record.leaseUntil > now || !allowTakeover) {
    return {
      state: "in-flight",
      fingerprint: record.fingerprint,
      leaseRemainingMs: Math.max(0, record.leaseUntil - now),
    };
  }
  return { state: "claimed", takeover: true };
}

/**
 * A record as returned by {@link IdempotencyStore.get}, for inspection and administration.
 *
 * @example
 * ```ts
 * const record = await store.get(key);
 * if (record?.state === "in-flight") console.log(`lease ends in ${record.leaseRemainingMs} ms`);
 * ```
 */
export type StoredRecord =
  | {
      state: "in-flight";
      fingerprint: string;
      /** The owner token of the request that holds the claim. */
      token: string;
      /** Time left on the lease; 0 when it has expired. */
      leaseRemainingMs: number;
      /** Time left until the record counts as absent. */
      ttlRemainingMs: number;
    }
  | {
      state: "completed";
      fingerprint: string;
      response: Uint8Array | null;
      /** Time left until the record counts as absent. */
      ttlRemainingMs: number;
    };

/**
 * A storage adapter. Every method either answers or throws `IdempotencyStoreError` (with `cause`) when the
 * store cannot answer; nothing else. Every method takes a last, optional {@link StoreCallOptions}: the
 * caller's deadline for that call, which a store that can enforce deadlines must use.
 *
 * @example
 * ```ts
 * import type { IdempotencyStore } from "@idempotency/core";
 * import { describeStore } from "@idempotency/conformance";
 *
 * class MyStore implements IdempotencyStore {
 *   // begin, complete, extend, release, get, delete — each one atomic operation
 * }
 *
 * describeStore("MyStore", () => new MyStore(sharedBackend));
 * ```
 */
export interface IdempotencyStore {
  /**
   * In ONE atomic operation: claim the key for `token` when there is no record, when the record's TTL has
   * expired, or (only when `allowTakeover`) when it is in flight with an expired lease; otherwise return the
   * record as it is. A claim writes an in-flight record with the fingerprint, a lease of `leaseMs` and a TTL
   * of `ttlMs` (the engine guarantees `leaseMs <= ttlMs`). A lease is live while its end is in the future.
   * Returned responses are the caller's own bytes: changing them never changes the record.
   */
  begin(key: string, args: BeginArgs, call?: StoreCallOptions): Promise<BeginResult>;
  /**
   * If `token` still owns the in-flight record: mark it completed with `response`, living `ttlMs` from now,
   * and return `true`. Otherwise change nothing and return `false`. A lease that expired without a takeover
   * still belongs to its token. `response` is the caller's buffer: write it out or copy it, never keep it.
   */
  complete(
    key: string,
    token: string,
    response: Uint8Array | null,
    ttlMs: number,
    call?: StoreCallOptions,
  ): Promise<boolean>;
  /**
   * If `token` still owns the in-flight record: renew its lease to `leaseMs` from now and return `true`. A
   * store may also push the record's TTL out to the new lease end; it must never cut it short.
   */
  extend(key: string, token: string, leaseMs: number, call?: StoreCallOptions): Promise<boolean>;
  /** If `token` still owns the in-flight record: delete it (the key is free again) and return `true`. */
  release(key: string, token: string, call?: StoreCallOptions): Promise<boolean>;
  /** The live record under `key`, or `null` when there is none or it has expired. For inspection. */
  get(key: string, call?: StoreCallOptions): Promise<StoredRecord | null>;
  /** Delete the record under `key` whatever its state; `true` when a live record was deleted. For administration. */
  delete(key: string, call?: StoreCallOptions): Promise<boolean>;
  /** Release what the store owns (connections it opened itself). Never closes a client it was given. */
  close?(): Promise<void>;
}

/**
 * Arguments of {@link TransactionalStore.transaction}: those of `begin`, plus how long a duplicate waits for
 * the transaction that holds the key, and the caller's deadline for the claim itself.
 *
 * @example
 * ```ts
 * const args: TransactionArgs = {
 *   token: randomUUID(), fingerprint: "none", leaseMs: 30_000, ttlMs: 86_400_000, allowTakeover: true,
 *   waitMs: 0, timeoutMs: 2_000,
 * };
 * ```
 */
export interface TransactionArgs extends BeginArgs {
  /**
   * How long to wait for another transaction that holds the key (its row lock, the write lock) before
   * answering `locked`. `0`: answer at once.
   */
  waitMs: number;
  /** The deadline of the claim, not counting `waitMs`: a store that cannot claim within it throws. */
  timeoutMs: number;
}

/**
 * What {@link TransactionalStore.transaction} did: committed the work with its record, or found the key
 * held, completed or locked and ran nothing.
 *
 * @example
 * ```ts
 * const outcome = await store.transaction(key, args, (tx) => work(tx));
 * if (outcome.state === "committed") console.log("the effect and its record committed together");
 * ```
 */
export type TransactionOutcome =
  /** The work ran, and its effects and the completed record committed in one transaction. */
  | { state: "committed"; takeover: boolean }
  /** Another transaction held the key for longer than `waitMs`: nothing ran. */
  | { state: "locked" }
  /** The record was in flight (claimed outside a transaction) or completed: nothing ran. */
  | Exclude<BeginResult, { state: "claimed" }>;

/**
 * The work a transactional store runs inside its transaction: the caller's writes, through `tx`, ending in
 * the encoded response that the store writes to the completed record before it commits. A throw rolls the
 * whole transaction back, claim included, and reaches the caller as it is.
 *
 * @example
 * ```ts
 * const work: TransactionWork<PoolClient> = async (tx) => {
 *   await tx.query("INSERT INTO orders (id) VALUES ($1)", [orderId]);
 *   return encodeResponse({ status: 200, headers: [], body: Buffer.from(JSON.stringify({ orderId })) });
 * };
 * ```
 */
export type TransactionWork<Tx> = (tx: Tx) => Uint8Array | null | Promise<Uint8Array | null>;

/**
 * A store that can commit the caller's own writes and the completed record in ONE database transaction
 * (`PostgresStore`, `SqliteStore`): what `idempotency.transaction()` needs. `Tx` is what the caller writes
 * through, e.g. a node-postgres `PoolClient` or a better-sqlite3 `Database`.
 *
 * `transaction` must, in one database transaction: decide as `begin` does, holding a lock on the key that
 * makes a concurrent duplicate wait (up to `waitMs`, then answer `locked`) instead of reading it; when the
 * key is claimable, run `work(tx)`, write the completed record with the bytes it returns (living `ttlMs`),
 * and commit; when `work` throws, roll back and rethrow its error unchanged. Nothing of a transaction that
 * did not commit may be visible afterwards: no record, no effect.
 *
 * @example
 * ```ts
 * import { isTransactionalStore } from "@idempotency/core";
 *
 * if (isTransactionalStore(store)) await idempotency.transaction(key, (tx) => writeOrder(tx));
 * ```
 */
export interface TransactionalStore<Tx> extends IdempotencyStore {
  /** Whether `work` must be synchronous (better-sqlite3 cannot hold a transaction across an `await`). */
  readonly synchronousTransactions: boolean;
  transaction(key: string, args: TransactionArgs, work: TransactionWork<Tx>): Promise<TransactionOutcome>;
}

/**
 * What a store's transactions hand the caller: `PoolClient` for `PostgresStore`, `Database` for
 * `SqliteStore`; `never` for a store that has no transactions.
 *
 * @example
 * ```ts
 * type Tx = TransactionOf<PostgresStore>; // PoolClient
 * ```
 */
export type TransactionOf<S> = S extends TransactionalStore<infer Tx> ? Tx : never;

/**
 * Whether `store` implements {@link TransactionalStore}.
 *
 * @example
 * ```ts
 * isTransactionalStore(new MemoryStore()); // false
 * ```
 */
export function isTransactionalStore(store: IdempotencyStore): store is TransactionalStore<unknown> {
  return typeof (store as Partial<TransactionalStore<unknown>>).transaction === "function";
}
