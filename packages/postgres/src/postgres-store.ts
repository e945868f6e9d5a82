import {
  type BeginArgs,
  type BeginResult,
  checkOptionNames,
  IdempotencyOptionsError,
  type IdempotencyStore,
  IdempotencyStoreError,
  type StoredRecord,
  type TransactionArgs,
  type TransactionalStore,
  type TransactionOutcome,
  type TransactionWork,
} from "@idempotency/core";
import type { Pool, PoolClient, QueryResultRow } from "pg";
import {
  type BeginRow,
  createTableSql,
  type GetRow,
  isValidTableName,
  quoteTable,
  type Statements,
  statementsFor,
} from "./statements.js";

/**
 * Options of {@link PostgresStore}.
 *
 * @example
 * ```ts
 * const options: PostgresStoreOptions = { pool: new Pool({ connectionString }), table: "app.idempotency" };
 * ```
 */
export interface PostgresStoreOptions {
  /**
   * A node-postgres `Pool` you own. The store only runs queries on it: it never ends it, and adds no
   * listeners to it. Attach `pool.on("error", …)` yourself, as node-postgres asks of every pool.
   */
  pool: Pool;
  /**
   * The records table: `name` or `schema.name`, lower-case letters, digits and `_`. Default
   * `"idempotency_records"`. Create it with {@link PostgresStore.createTable} or {@link createTableSql}.
   */
  table?: string;
}

const DEFAULT_TABLE = "idempotency_records";
const KNOWN_OPTIONS = ["pool", "table"];
/** PostgreSQL's codes for "relation does not exist", and for a table whose columns are not the store's. */
const UNDEFINED_TABLE = "42P01";
const WRONG_SCHEMA = new Set(["42703", "42804", "23502"]); // undefined column, datatype mismatch, not-null
/** PostgreSQL's code for a lock wait that ran past `lock_timeout`: another transaction holds the key. */
const LOCK_NOT_AVAILABLE = "55P03";
/** PostgreSQL's code for a statement in a transaction that an earlier failed statement aborted. */
const IN_FAILED_TRANSACTION = "25P02";

/**
 * An `IdempotencyStore` on PostgreSQL through a node-postgres `Pool` you pass in. Its source is also the
 * worked example of docs/writing-a-store.md.
 *
 * - Every operation is ONE SQL statement. `begin` is an `INSERT … ON CONFLICT (key) DO UPDATE` that claims
 *   or reports in a single atomic step; `complete`, `extend` and `release` are an `UPDATE`/`DELETE … WHERE
 *   key = $1 AND token = $2`, fenced by the owner token.
 * - Leases and TTLs are `timestamptz` on the database's clock (`now()`), so application servers with
 *   skewed clocks agree. Expiry is checked in every statement; {@link sweep} only reclaims space.
 * - Responses are `bytea`, stored and returned byte for byte.
 * - The table is created by {@link createTable}, never implicitly by a request: in production the schema
 *   usually belongs to your migrations, and the application's role may not be allowed to create tables.
 *
 * @example
 * ```ts
 * import { createIdempotency } from "@idempotency/core";
 * import { Pool } from "pg";
 * import { PostgresStore } from "@idempotency/postgres";
 *
 * const pool = new Pool({ connectionString: process.env.DATABASE_URL });
 * pool.on("error", (error) => console.error("idle PostgreSQL client failed", error));
 * const store = new PostgresStore({ pool });
 * await store.createTable(); // once, at start-up; or run createTableSql() in your migrations
 * const idempotency = createIdempotency({ store, scope: "global" });
 * ```
 */
export class PostgresStore implements IdempotencyStore, TransactionalStore<PoolClient> {
  /** Transaction functions may be async: the transaction lives on one pooled client across awaits. */
  readonly synchronousTransactions = false;
  readonly #pool: Pool;
  readonly #table: string;
  readonly #sql: Statements;
  #closed = false;

  /** Validates the options (throwing `IdempotencyOptionsError` naming a bad one); runs no query. */
  constructor(options: PostgresStoreOptions) {
    checkOptionNames(options, KNOWN_OPTIONS, "an object such as `{ pool: new Pool() }`");
    const pool = options.pool as unknown;
    if (typeof pool !== "object" || pool === null || typeof (pool as Pool).query !== "function") {
      throw new IdempotencyOptionsError(
        "pool",
        "required: a node-postgres Pool, e.g. `new Pool({ connectionString })`.",
      );
    }
    const table = options.table ?? DEFAULT_TABLE;
    if (!isValidTableName(table)) {
      throw new IdempotencyOptionsError(
        "table",
        `expected "name" or "schema.name" of lower-case letters, digits and _ (name at most 52 characters), got ${JSON.stringify(table)}.`,
      );
    }
    this.#pool = pool as Pool;
    this.#table = table;
    this.#sql = statementsFor(table);
  }

  /** The records table, as given in the options. */
  get table(): string {
    return this.#table;
  }

  /**
   * Creates the records table and its index when they do not exist. Safe to call from every process at
   * start-up: an advisory lock makes concurrent calls wait for each other instead of failing.
   *
   * @example
   * ```ts
   * await new PostgresStore({ pool }).createTable();
   * ```
   */
  async createTable(): Promise<void> {
    // A multi-statement query runs as one transaction, so the lock is held until the DDL has committed.
    // Two concurrent CREATE TABLE IF NOT EXISTS would otherwise both try to create the table, and one fail.
    const lock = `SELECT pg_advisory_xact_lock(hashtext('${quoteTable(this.#table)}'))`;
    await this.#query("createTable", `${lock};\n${createTableSql(this.#table)}`);
  }

  async begin(key: string, args: BeginArgs): Promise<BeginResult> {
    const { token, fingerprint, leaseMs, ttlMs, allowTakeover } = args;
    const { rows } = await this.#query<BeginRow>("begin", this.#sql.begin, [
      key,
      fingerprint,
      token,
      leaseMs,
      ttlMs,
      allowTakeover,
    ]);
    const row = rows[0];
    if (row === undefined) throw new IdempotencyStoreError("PostgresStore begin returned no row.");
    if (row.claimed) return { state: "claimed", takeover: row.takeover };
    if (row.completed) {
      return { state: "completed", fingerprint: row.fingerprint, response: bytes(row.response) };
    }
    return { state: "in-flight", fingerprint: row.fingerprint, leaseRemainingMs: row.lease_remaining_ms };
  }

  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number): Promise<boolean> {
    // node-postgres sends a Uint8Array (or a view into a larger buffer) as exactly its bytes.
    const result = await this.#query("complete", this.#sql.complete, [key, token, response, ttlMs]);
    return result.rowCount === 1;
  }

  async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
    const result = await this.#query("extend", this.#sql.extend, [key, token, leaseMs]);
    return result.rowCount === 1;
  }

  async release(key: string, token: string): Promise<boolean> {
    const result = await this.#query("release", this.#sql.release, [key, token]);
    return result.rowCount === 1;
  }

  async get(key: string): Promise<StoredRecord | null> {
    const { rows } = await this.#query<GetRow>("get", this.#sql.get, [key]);
    const row = rows[0];
    if (row === undefined) return null;
    if (row.token === null) {
      return {
        state: "completed",
        fingerprint: row.fingerprint,
        response: bytes(row.response),
        ttlRemainingMs: row.ttl_remaining_ms,
      };
    }
    return {
      state: "in-flight",
      fingerprint: row.fingerprint,
      token: row.token,
      leaseRemainingMs: row.lease_remaining_ms,
      ttlRemainingMs: row.ttl_remaining_ms,
    };
  }

  async delete(key: string): Promise<boolean> {
    const { rows } = await this.#query<{ live: boolean }>("delete", this.#sql.delete, [key]);
    return rows[0]?.live === true;
  }

  /**
   * The store half of `idempotency.transaction()`: on one client of the pool, `BEGIN`, the `begin` statement
   * (which inserts or locks the key's row, waiting at most `waitMs` for another transaction that holds it),
   * `work(client)`, the completion of the row with the bytes it returns, `COMMIT`. A duplicate sees nothing
   * until the commit, and then the completed record. A throw, a crash or a lost connection before the commit
   * leaves neither the effect nor the record.
   *
   * @example
   * ```ts
   * const idempotency = createIdempotency({ store: new PostgresStore({ pool }), scope: "global" });
   * await idempotency.transaction(orderId, async (tx) => {
   *   await tx.query("INSERT INTO orders (id) VALUES ($1)", [orderId]);
   * });
   * ```
   */
  async transaction(
    key: string,
    args: TransactionArgs,
    work: TransactionWork<PoolClient>,
  ): Promise<TransactionOutcome> {
    if (this.#closed) {
      throw new IdempotencyStoreError("PostgresStore transaction failed: the store was closed.");
    }
    const { token, fingerprint, leaseMs, ttlMs, allowTakeover, waitMs, timeoutMs } = args;
    let client: PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw this.#storeError("transaction", error);
    }
    // Whether the client is known to be outside any transaction, so it can go back to the pool as it is.
    let clean = false;
    let guardedEnd: (() => void) | undefined;
    const rollback = async () => {
      await client.query("ROLLBACK");
      clean = true;
    };
    try {
      let row: BeginRow | undefined;
      try {
        // lock_timeout 0 would mean "wait forever": an immediate answer is the shortest wait there is.
        await client.query(
          `BEGIN; SET LOCAL lock_timeout = '${Math.max(1, waitMs)}ms'; SET LOCAL statement_timeout = '${waitMs + timeoutMs}ms'`,
        );
        ({
          rows: [row],
        } = await client.query<BeginRow>(this.#sql.begin, [
          key,
          fingerprint,
          token,
          leaseMs,
          ttlMs,
          allowTakeover,
        ]));
      } catch (error) {
        if ((error as { code?: unknown }).code === LOCK_NOT_AVAILABLE) {
          await rollback();
          return { state: "locked" };
        }
        throw this.#storeError("transaction", error);
      }
      if (row === undefined) throw new IdempotencyStoreError("PostgresStore begin returned no row.");
      if (!row.claimed) {
        await rollback();
        if (row.completed) {
          return { state: "completed", fingerprint: row.fingerprint, response: bytes(row.response) };
        }
        return { state: "in-flight", fingerprint: row.fingerprint, leaseRemainingMs: row.lease_remaining_ms };
      }
      // The caller's statements run under the session's own timeouts, not the claim's.
      await client.query("SET LOCAL lock_timeout TO DEFAULT; SET LOCAL statement_timeout TO DEFAULT");
      let response: Uint8Array | null;
      const guarded = guardClient(client);
      guardedEnd = guarded.end;
      try {
        response = await work(guarded.client);
      } catch (error) {
        guarded.end();
        await rollback().catch(() => {});
        throw error;
      }
      // From here on only the store writes: the record, then COMMIT.
      guarded.end();
      let completed: number | null;
      try {
        ({ rowCount: completed } = await client.query(this.#sql.completeInTransaction, [
          key,
          token,
          response,
          ttlMs,
        ]));
      } catch (error) {
        if ((error as { code?: unknown }).code === IN_FAILED_TRANSACTION) {
          throw new IdempotencyStoreError(
            "PostgresStore transaction failed: a statement of the transaction function failed, so PostgreSQL aborted the transaction; nothing was committed (neither the effect nor the record). Let the error propagate, or use a SAVEPOINT around a statement that may fail.",
            { cause: error },
          );
        }
        throw this.#storeError("transaction", error);
      }
      if (completed !== 1) {
        throw new IdempotencyStoreError(
          "PostgresStore transaction failed: the transaction function ended the transaction itself (COMMIT or ROLLBACK), so its writes and the record could not commit together. Never end the transaction inside the function; use savepoints.",
        );
      }
      try {
        await client.query("COMMIT");
        clean = true;
      } catch (error) {
        throw new IdempotencyStoreError(
          `PostgresStore transaction failed at COMMIT: ${reasonOf(error)}. The effect and the record commit together or not at all, so a retry with this key either replays or runs once.`,
          { cause: error },
        );
      }
      return { state: "committed", takeover: row.takeover };
    } finally {
      guardedEnd?.();
      if (!clean) {
        // Roll back whatever is left; a client whose state is unknown is destroyed, not pooled.
        try {
          await client.query("ROLLBACK");
          clean = true;
        } catch {
          // destroyed below
        }
      }
      client.release(clean ? undefined : true);
    }
  }

  /**
   * Deletes up to `limit` expired records and returns how many it deleted. Expired records already count
   * as absent, so this only reclaims space: call it from a timer or a scheduled job.
   *
   * @example
   * ```ts
   * setInterval(() => store.sweep().catch((error) => console.error(error)), 60_000).unref();
   * ```
   */
  async sweep(limit = 1_000): Promise<number> {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new IdempotencyStoreError(
        `PostgresStore sweep(limit) expects a whole number >= 0, got ${limit}.`,
      );
    }
    const result = await this.#query("sweep", this.#sql.sweep, [limit]);
    return result.rowCount ?? 0;
  }

  /** Stops the store: later calls throw `IdempotencyStoreError`. The pool is yours and stays open. */
  async close(): Promise<void> {
    this.#closed = true;
  }

  /** Runs one statement, turning every failure into an `IdempotencyStoreError` with the cause attached. */
  async #query<R extends QueryResultRow>(operation: string, text: string, values: unknown[] = []) {
    if (this.#closed) {
      throw new IdempotencyStoreError(`PostgresStore ${operation} failed: the store was closed.`);
    }
    try {
      return await this.#pool.query<R>(text, values);
    } catch (error) {
      throw this.#storeError(operation, error);
    }
  }

  /** A driver or server failure as an `IdempotencyStoreError`, with a hint for a missing or foreign table. */
  #storeError(operation: string, error: unknown): IdempotencyStoreError {
    if (error instanceof IdempotencyStoreError) return error;
    const code = (error as { code?: unknown } | null)?.code;
    const hint =
      code === UNDEFINED_TABLE
        ? ` Create the table first: await store.createTable(), or run createTableSql("${this.#table}") in a migration.`
        : typeof code === "string" && WRONG_SCHEMA.has(code)
          ? ` The table "${this.#table}" does not have the store's columns (key, fingerprint, token, attempt, response, lease_until, expires_at): point the store at its own table, or recreate this one with createTableSql("${this.#table}").`
          : "";
    return new IdempotencyStoreError(`PostgresStore ${operation} failed: ${reasonOf(error)}.${hint}`, {
      cause: error,
    });
  }
}

/**
 * The client as the caller's function sees it: the pooled client itself, except that once the transaction
 * has ended `query` rejects and `release` throws. Work the function left running (a promise it did not
 * await) must never write through a client that went back to the pool, where its statements would run
 * outside any transaction, or inside somebody else's.
 */
function guardClient(client: PoolClient): { client: PoolClient; end(): void } {
  let ended = false;
  const endedError = () =>
    new IdempotencyStoreError(
      "PostgresStore transaction: this transaction has already ended (committed or rolled back), so its client no longer accepts statements. Await every statement inside the transaction function.",
    );
  const proxy = new Proxy(client, {
    get(target, property) {
      if (property === "query") {
        return (...args: unknown[]) => {
          if (ended) {
            const callback = args.find((arg) => typeof arg === "function") as
              | ((error: Error) => void)
              | undefined;
            if (callback) return void process.nextTick(callback, endedError());
            return Promise.reject(endedError());
          }
          return (target.query as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      if (property === "release") {
        return () => {
          throw new IdempotencyStoreError(
            "PostgresStore transaction: the transaction's client belongs to the store, which releases it after COMMIT or ROLLBACK; do not release it yourself.",
          );
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    client: proxy,
    end: () => {
      ended = true;
    },
  };
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A `bytea` column as a `Uint8Array` that owns its memory. node-postgres decodes small values into Node's
 * shared buffer pool, so the `Buffer` it returns may sit in a larger `ArrayBuffer` with other data.
 */
function bytes(value: Buffer | null): Uint8Array | null {
  return value === null ? null : new Uint8Array(value);
}
