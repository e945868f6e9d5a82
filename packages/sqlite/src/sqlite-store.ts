import { setTimeout as sleep } from "node:timers/promises";
import {
  type BeginArgs,
  type BeginResult,
  decideBegin,
  type HeldRecord,
  type IdempotencyStore,
  IdempotencyStoreError,
  type StoredRecord,
  type TransactionArgs,
  type TransactionalStore,
  type TransactionOutcome,
  type TransactionWork,
} from "@idempotency/core";
import Database from "better-sqlite3";
import {
  type ResolvedSqliteStoreOptions,
  resolveSqliteStoreOptions,
  type SqliteDatabase,
  type SqliteStoreOptions,
} from "./options.js";
import { ensureSchema } from "./schema.js";

/** How long to wait between tries of a busy operation, like SQLite's own busy handler (then 25 ms apart). */
const BUSY_RETRY_MS = [1, 2, 5, 10, 15, 20, 25];
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** `SQLITE_BUSY` and its extended codes (`SQLITE_BUSY_RECOVERY`, `SQLITE_BUSY_SNAPSHOT`, …). */
function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("SQLITE_BUSY");
}

/** Blocks for `ms`, as SQLite's busy handler does: every call of this store is synchronous anyway. */
function pause(ms: number): void {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}

/** The prepared statements and transactions of one connection, made once on first use. */
interface Operations {
  db: SqliteDatabase;
  begin(key: string, args: BeginArgs): BeginResult;
  complete(key: string, token: string, response: Uint8Array | null, ttlMs: number): boolean;
  extend(key: string, token: string, leaseMs: number): boolean;
  release(key: string, token: string): boolean;
  get(key: string): StoredRecord | null;
  delete(key: string): boolean;
  sweep(limit: number): number;
  /** One `BEGIN IMMEDIATE` transaction around `work`; throws `SQLITE_BUSY` at once when another holds the lock. */
  transaction(key: string, args: TransactionArgs, work: TransactionWork<SqliteDatabase>): TransactionOutcome;
}

/** A throw of the caller's work, carried through the transaction so that it reaches the caller unchanged. */
class WorkFailure {
  constructor(readonly error: unknown) {}
}

function prepareOperations(
  db: SqliteDatabase,
  table: string,
  now: () => number,
  busyTimeoutMs: number,
): Operations {
  const t = `"${table}"`;
  const select = db.prepare<[string], HeldRecord>(
    `SELECT fingerprint, token, response, lease_until AS leaseUntil, expires_at AS expiresAt
     FROM ${t} WHERE key = ?`,
  );
  const claim = db.prepare(
    `INSERT INTO ${t} (key, fingerprint, token, response, lease_until, expires_at)
     VALUES (@key, @fingerprint, @token, NULL, @leaseUntil, @expiresAt)
     ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, token = excluded.token,
       response = NULL, lease_until = excluded.lease_until, expires_at = excluded.expires_at`,
  );
  // The completed record of a transaction() that claimed the key: written in the same transaction as the
  // caller's effect, so no in-flight record is ever visible.
  const store = db.prepare(
    `INSERT INTO ${t} (key, fingerprint, token, response, lease_until, expires_at)
     VALUES (@key, @fingerprint, NULL, @response, @at, @expiresAt)
     ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, token = NULL,
       response = excluded.response, lease_until = excluded.lease_until, expires_at = excluded.expires_at`,
  );
  // Fenced writes: each changes the row only while `token` owns it and its TTL has not run out.
  const complete = db.prepare(
    `UPDATE ${t} SET token = NULL, response = @response, expires_at = @expiresAt
     WHERE key = @key AND token = @token AND expires_at > @now`,
  );
  const extend = db.prepare(
    `UPDATE ${t} SET lease_until = @leaseUntil, expires_at = MAX(expires_at, @leaseUntil)
     WHERE key = @key AND token = @token AND expires_at > @now`,
  );
  const release = db.prepare(`DELETE FROM ${t} WHERE key = @key AND token = @token AND expires_at > @now`);
  const remove = db.prepare<[string], { expiresAt: number }>(
    `DELETE FROM ${t} WHERE key = ? RETURNING expires_at AS expiresAt`,
  );
  // Walks the expires_at index, so one sweep touches at most `limit` rows however many have expired.
  const sweep = db.prepare<[number, number]>(
    `DELETE FROM ${t} WHERE rowid IN (SELECT rowid FROM ${t} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`,
  );

  // Every state change runs as one BEGIN IMMEDIATE transaction: the write lock is taken before the row is
  // read, so a read and the write that depends on it can never interleave with another connection's. The
  // clock is read inside, after any wait for the lock.
  const beginTx = db.transaction((key: string, args: BeginArgs): BeginResult => {
    const at = now();
    const decision = decideBegin(select.get(key), at, args.allowTakeover);
    if (decision.state !== "claimed") return decision;
    claim.run({
      key,
      fingerprint: args.fingerprint,
      token: args.token,
      leaseUntil: at + args.leaseMs,
      expiresAt: at + Math.max(args.ttlMs, args.leaseMs),
    });
    return decision;
  });
  const completeTx = db.transaction(
    (key: string, token: string, response: Uint8Array | null, ttlMs: number): boolean => {
      const at = now();
      return complete.run({ key, token, response, expiresAt: at + ttlMs, now: at }).changes === 1;
    },
  );
  const extendTx = db.transaction((key: string, token: string, leaseMs: number): boolean => {
    const at = now();
    return extend.run({ key, token, leaseUntil: at + leaseMs, now: at }).changes === 1;
  });
  const releaseTx = db.transaction((key: string, token: string): boolean => {
    return release.run({ key, token, now: now() }).changes === 1;
  });
  const workTx = db.transaction(
    (key: string, args: TransactionArgs, work: TransactionWork<SqliteDatabase>): TransactionOutcome => {
      // BEGIN IMMEDIATE was tried without waiting (the caller waits between tries, off the event loop);
      // the caller's own statements get the connection's busy timeout back.
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      const decision = decideBegin(select.get(key), now(), args.allowTakeover);
      if (decision.state !== "claimed") return decision;
      let response: Uint8Array | null;
      try {
        response = work(db) as Uint8Array | null;
      } catch (error) {
        throw new WorkFailure(error);
      }
      if (!db.inTransaction) {
        throw new IdempotencyStoreError(
          "SqliteStore transaction failed: the transaction function ended the transaction itself (COMMIT or ROLLBACK), so its writes and the record could not commit together. Never end the transaction inside the function; nest db.transaction() calls instead (they become savepoints).",
        );
      }
      const at = now();
      store.run({ key, fingerprint: args.fingerprint, response, at, expiresAt: at + args.ttlMs });
      return { state: "committed", takeover: decision.takeover };
    },
  );
  const deleteTx = db.transaction((key: string): boolean => {
    const deleted = remove.get(key);
    return deleted !== undefined && deleted.expiresAt > now();
  });

  return {
    db,
    begin: (key, args) => beginTx.immediate(key, args),
    complete: (key, token, response, ttlMs) => completeTx.immediate(key, token, response, ttlMs),
    extend: (key, token, leaseMs) => extendTx.immediate(key, token, leaseMs),
    release: (key, token) => releaseTx.immediate(key, token),
    delete: (key) => deleteTx.immediate(key),
    get(key) {
      const at = now();
      const row = select.get(key);
      if (row === undefined || row.expiresAt <= at) return null;
      const ttlRemainingMs = row.expiresAt - at;
      if (row.token === null) {
        return { state: "completed", fingerprint: row.fingerprint, response: row.response, ttlRemainingMs };
      }
      return {
        state: "in-flight",
        fingerprint: row.fingerprint,
        token: row.token,
        leaseRemainingMs: Math.max(0, row.leaseUntil - at),
        ttlRemainingMs,
      };
    },
    sweep: (limit) => sweep.run(now(), limit).changes,
    transaction(key, args, work) {
      db.pragma("busy_timeout = 0");
      try {
        return workTx.immediate(key, args, work);
      } finally {
        db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      }
    },
  };
}

/**
 * A durable `IdempotencyStore` on SQLite (better-sqlite3): records survive restarts, and any number of
 * processes on one host may share one database file.
 *
 * - Every state change (`begin`, `complete`, `extend`, `release`, `delete`) is one `BEGIN IMMEDIATE`
 *   transaction on statements prepared once; `complete`, `extend` and `release` are fenced by the owner
 *   token.
 * - The connection runs in WAL mode with a busy timeout, so processes wait for each other's short write
 *   transactions instead of failing with `SQLITE_BUSY`; `synchronous` is `NORMAL` unless you ask for `FULL`.
 * - Times are epoch milliseconds on the store's clock (`Date.now`, shared by every process on the host).
 *   Expired records count as absent in every operation; a bounded sweep deletes a few of them every
 *   `sweepEvery` claims.
 * - The table (default `idempotency_records`) and a schema version entry are created on first use.
 *
 * better-sqlite3 is synchronous: each call holds the event loop for one short transaction (longer only
 * while it waits for another process's write lock, at most `busyTimeoutMs`). WAL needs shared memory, so the
 * file must be on a local disk, not a network file system.
 *
 * @example
 * ```ts
 * import { createIdempotency } from "@idempotency/core";
 * import { SqliteStore } from "@idempotency/sqlite";
 *
 * // The store opens the file and closes it on close():
 * const idempotency = createIdempotency({ store: new SqliteStore({ path: "idempotency.db" }), scope: "global" });
 *
 * // Or share a connection you own (the store never closes it):
 * import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
 * const db = new Database("app.db");
 * const store = new SqliteStore({ database: db, table: "idempotency_keys", synchronous: "FULL" });
 * ```
 */
export class SqliteStore implements IdempotencyStore, TransactionalStore<SqliteDatabase> {
  /** better-sqlite3 cannot hold a transaction across an `await`: transaction functions are synchronous. */
  readonly synchronousTransactions = true;
  readonly #options: ResolvedSqliteStoreOptions;
  #operations: Operations | undefined;
  #closed = false;
  #claimsSinceSweep = 0;

  /**
   * Validates the options (throwing `IdempotencyOptionsError` naming a bad one); the database is opened and
   * the table created on first use, so construction never touches the file.
   */
  constructor(options: SqliteStoreOptions) {
    this.#options = resolveSqliteStoreOptions(options);
  }

  /** The name of the records table. */
  get table(): string {
    return this.#options.table;
  }

  async begin(key: string, args: BeginArgs): Promise<BeginResult> {
    const result = this.#run("begin", (ops) => ops.begin(key, args));
    if (result.state === "claimed" && ++this.#claimsSinceSweep >= this.#options.sweepEvery) {
      this.#claimsSinceSweep = 0;
      this.#sweepQuietly();
    }
    return result;
  }

  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number): Promise<boolean> {
    return this.#run("complete", (ops) => ops.complete(key, token, response, ttlMs));
  }

  async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
    return this.#run("extend", (ops) => ops.extend(key, token, leaseMs));
  }

  async release(key: string, token: string): Promise<boolean> {
    return this.#run("release", (ops) => ops.release(key, token));
  }

  async get(key: string): Promise<StoredRecord | null> {
    return this.#run("get", (ops) => ops.get(key));
  }

  async delete(key: string): Promise<boolean> {
    return this.#run("delete", (ops) => ops.delete(key));
  }

  /**
   * The store half of `idempotency.transaction()`: one `BEGIN IMMEDIATE` transaction on the store's
   * connection that decides as `begin` does, runs `work(db)` (your writes, synchronously, on the same
   * connection) and writes the completed record before `COMMIT`. Another connection holding the write lock
   * (another process in its own transaction) is waited for up to `waitMs`, polling off the event loop, and
   * then answered `locked`. Pass the `database` you write to as the store's `database` option.
   *
   * @example
   * ```ts
   * const db = new Database("app.db");
   * const idempotency = createIdempotency({ store: new SqliteStore({ database: db }), scope: "global" });
   * idempotency.transaction(orderId, (tx) => tx.prepare("INSERT INTO orders (id) VALUES (?)").run(orderId));
   * ```
   */
  async transaction(
    key: string,
    args: TransactionArgs,
    work: TransactionWork<SqliteDatabase>,
  ): Promise<TransactionOutcome> {
    const startedAt = performance.now();
    for (let attempt = 0; ; attempt++) {
      const operations = this.#run("transaction", (ops) => ops);
      try {
        return operations.transaction(key, args, work);
      } catch (error) {
        if (error instanceof WorkFailure) throw error.error;
        if (error instanceof IdempotencyStoreError) throw error;
        if (!isBusy(error)) {
          const reason = error instanceof Error ? error.message : String(error);
          throw new IdempotencyStoreError(`SqliteStore transaction() failed: ${reason}`, { cause: error });
        }
        // Another connection holds the write lock: it is in its own transaction, maybe this key's.
        const waited = performance.now() - startedAt;
        if (waited >= args.waitMs) return { state: "locked" };
        const retryMs = BUSY_RETRY_MS[Math.min(attempt, BUSY_RETRY_MS.length - 1)] as number;
        await sleep(Math.max(1, Math.min(retryMs, args.waitMs - waited)));
      }
    }
  }

  /**
   * Deletes up to `limit` expired records (default `sweepLimit`) and returns how many it deleted. The store
   * already does this every `sweepEvery` claims; call it from a timer only to reclaim space faster.
   *
   * @example
   * ```ts
   * const deleted = await store.sweep(1_000);
   * ```
   */
  async sweep(limit: number = this.#options.sweepLimit): Promise<number> {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new IdempotencyStoreError(`sweep(limit) expects a whole number >= 0, got ${String(limit)}.`);
    }
    return this.#run("sweep", (ops) => ops.sweep(limit));
  }

  /**
   * Stops the store. A database opened from `path` is closed; a `database` you passed stays open (close it
   * yourself). Later calls throw `IdempotencyStoreError`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const operations = this.#operations;
    this.#operations = undefined;
    if (operations && this.#options.path !== undefined && operations.db.open) operations.db.close();
  }

  /**
   * Runs `operation` on the prepared connection, turning every failure into an `IdempotencyStoreError`. A
   * `SQLITE_BUSY` that reaches it before `busyTimeoutMs` has passed is retried: SQLite does not always wait in
   * its busy handler (another process opening or recovering the WAL, a `journal_mode` switch while others
   * open the file, a handle whose busy timeout was changed), and every operation is one transaction that a
   * `SQLITE_BUSY` rolled back whole, so trying it again is safe.
   */
  #run<T>(name: string, operation: (ops: Operations) => T): T {
    if (this.#closed) {
      throw new IdempotencyStoreError(`SqliteStore ${name}() was called after close().`);
    }
    const startedAt = performance.now();
    for (let attempt = 0; ; attempt++) {
      try {
        return operation(this.#ready());
      } catch (error) {
        if (error instanceof IdempotencyStoreError) throw error;
        const waited = performance.now() - startedAt;
        if (isBusy(error) && waited < this.#options.busyTimeoutMs) {
          pause(
            Math.min(
              BUSY_RETRY_MS[Math.min(attempt, BUSY_RETRY_MS.length - 1)] as number,
              this.#options.busyTimeoutMs - waited,
            ),
          );
          continue;
        }
        const reason = error instanceof Error ? error.message : String(error);
        throw new IdempotencyStoreError(`SqliteStore ${name}() failed: ${reason}`, { cause: error });
      }
    }
  }

  /** Opens and configures the connection, creates the schema and prepares the statements, once. */
  #ready(): Operations {
    if (this.#operations) return this.#operations;
    const { database, path, table, busyTimeoutMs, synchronous, now } = this.#options;
    const db = database ?? new Database(path as string, { timeout: busyTimeoutMs });
    try {
      // The busy timeout first, so that switching to WAL waits for other connections instead of failing.
      db.pragma(`busy_timeout = ${busyTimeoutMs}`);
      db.pragma("journal_mode = WAL");
      db.pragma(`synchronous = ${synchronous}`);
      ensureSchema(db, table);
      this.#operations = prepareOperations(db, table, now, busyTimeoutMs);
      return this.#operations;
    } catch (error) {
      // A failed first use leaves nothing half-open: the next call starts over.
      if (database === undefined && db.open) db.close();
      throw error;
    }
  }

  /** Garbage collection after a claim: a failure here changes no answer, since expiry is checked logically. */
  #sweepQuietly(): void {
    if (this.#options.sweepLimit === 0 || !this.#operations) return;
    try {
      this.#operations.sweep(this.#options.sweepLimit);
    } catch {
      // Busy or closed: the next sweep tries again.
    }
  }
}
