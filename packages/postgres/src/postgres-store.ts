import {
  type BeginArgs,
  type BeginResult,
  checkOptionNames,
  IdempotencyOptionsError,
  type IdempotencyStore,
  IdempotencyStoreError,
  type StoredRecord,
} from "@idempotency/core";
import type { Pool, QueryResultRow } from "pg";
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
export class PostgresStore implements IdempotencyStore {
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
      const reason = error instanceof Error ? error.message : String(error);
      const code = (error as { code?: unknown }).code;
      const hint =
        code === UNDEFINED_TABLE
          ? ` Create the table first: await store.createTable(), or run createTableSql("${this.#table}") in a migration.`
          : typeof code === "string" && WRONG_SCHEMA.has(code)
            ? ` The table "${this.#table}" does not have the store's columns (key, fingerprint, token, attempt, response, lease_until, expires_at): point the store at its own table, or recreate this one with createTableSql("${this.#table}").`
            : "";
      throw new IdempotencyStoreError(`PostgresStore ${operation} failed: ${reason}.${hint}`, {
        cause: error,
      });
    }
  }
}

/**
 * A `bytea` column as a `Uint8Array` that owns its memory. node-postgres decodes small values into Node's
 * shared buffer pool, so the `Buffer` it returns may sit in a larger `ArrayBuffer` with other data.
 */
function bytes(value: Buffer | null): Uint8Array | null {
  return value === null ? null : new Uint8Array(value);
}
