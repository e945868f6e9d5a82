import { checkOptionNames, IdempotencyOptionsError, wholeNumberOption } from "@idempotency/core";
import type BetterSqlite3 from "better-sqlite3";

/**
 * A better-sqlite3 connection, as `new Database(file)` returns it.
 *
 * @example
 * ```ts
 * import Database from "better-sqlite3";
 * const database: SqliteDatabase = new Database("app.db");
 * ```
 */
export type SqliteDatabase = BetterSqlite3.Database;

/**
 * `PRAGMA synchronous` for the store's connection. In WAL mode, `"NORMAL"` never corrupts the database but
 * a power loss or OS crash may undo the last few committed transactions; `"FULL"` syncs the WAL on every
 * commit, so every completed record survives a power loss, at the cost of one fsync per state change.
 *
 * @example
 * ```ts
 * const synchronous: SqliteSynchronous = "FULL";
 * new SqliteStore({ path: "idempotency.db", synchronous });
 * ```
 */
export type SqliteSynchronous = "NORMAL" | "FULL";

/**
 * Options of {@link SqliteStore}: exactly one of `database` (a connection you own) or `path` (a file the
 * store opens and closes).
 *
 * @example
 * ```ts
 * const options: SqliteStoreOptions = { path: "/var/lib/app/idempotency.db", synchronous: "FULL" };
 * ```
 */
export interface SqliteStoreOptions {
  /**
   * A better-sqlite3 `Database` you own. The store configures it (WAL, busy timeout, `synchronous`) and
   * never closes it: `close()` only stops the store from using it.
   */
  database?: SqliteDatabase;
  /** A database file the store opens on first use and closes on `close()`. Created when missing. */
  path?: string;
  /**
   * The records table, created on first use. Letters, digits and `_`, not starting with a digit or
   * `sqlite_`, at most 64 characters. Default `"idempotency_records"`.
   */
  table?: string;
  /** `PRAGMA synchronous`: `"NORMAL"` (default) or `"FULL"` (every completion durable across power loss). */
  synchronous?: SqliteSynchronous;
  /**
   * How long a call waits for another connection's write lock before failing with `SQLITE_BUSY`. Calls are
   * synchronous, so this (not the engine's `storeTimeoutMs`) bounds how long one can take. Default `2_000`,
   * the engine's default `storeTimeoutMs`.
   */
  busyTimeoutMs?: number;
  /**
   * The store's clock in epoch milliseconds. Default `Date.now`: every process on one host shares that
   * clock. Inject one only in tests, and give every store over the same file the same clock.
   */
  now?: () => number;
  /** Every this many claims, the store deletes a few expired records. Default `4`. */
  sweepEvery?: number;
  /** The most expired records one sweep deletes; `0` turns sweeping off. Default `8`. */
  sweepLimit?: number;
}

/** The options with defaults applied. */
export interface ResolvedSqliteStoreOptions {
  database: SqliteDatabase | undefined;
  path: string | undefined;
  table: string;
  synchronous: SqliteSynchronous;
  busyTimeoutMs: number;
  now: () => number;
  sweepEvery: number;
  sweepLimit: number;
}

export const DEFAULT_TABLE = "idempotency_records";
/** The table that records the schema version of each records table. */
export const SCHEMA_TABLE = "idempotency_schema";

const KNOWN_OPTIONS = new Set([
  "database",
  "path",
  "table",
  "synchronous",
  "busyTimeoutMs",
  "now",
  "sweepEvery",
  "sweepLimit",
]);
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function looksLikeDatabase(value: unknown): value is SqliteDatabase {
  const candidate = value as { prepare?: unknown; transaction?: unknown; pragma?: unknown } | null;
  return (
    typeof candidate === "object" &&
    candidate !== null &&
    typeof candidate.prepare === "function" &&
    typeof candidate.transaction === "function" &&
    typeof candidate.pragma === "function"
  );
}

/** Validates the options of `SqliteStore`, throwing `IdempotencyOptionsError` naming the first bad one. */
export function resolveSqliteStoreOptions(options: SqliteStoreOptions): ResolvedSqliteStoreOptions {
  checkOptionNames(
    options,
    KNOWN_OPTIONS,
    "{ database } (a better-sqlite3 Database) or { path } (a file name)",
  );
  const { database, path } = options;
  if (database !== undefined && path !== undefined) {
    throw new IdempotencyOptionsError(
      "database",
      "give either database (a connection you own) or path (a file the store opens), not both.",
    );
  }
  if (database === undefined && path === undefined) {
    throw new IdempotencyOptionsError(
      "database",
      "SqliteStore needs { database } (a better-sqlite3 Database) or { path } (a file name).",
    );
  }
  if (database !== undefined && !looksLikeDatabase(database)) {
    throw new IdempotencyOptionsError(
      "database",
      'expected a better-sqlite3 Database, e.g. new Database("app.db") from "better-sqlite3".',
    );
  }
  if (path !== undefined && (typeof path !== "string" || path.length === 0)) {
    throw new IdempotencyOptionsError("path", "expected a non-empty file name.");
  }

  const table = options.table ?? DEFAULT_TABLE;
  if (typeof table !== "string" || !IDENTIFIER.test(table)) {
    throw new IdempotencyOptionsError(
      "table",
      `expected 1-64 letters, digits or underscores not starting with a digit, got ${JSON.stringify(table)}.`,
    );
  }
  if (table.toLowerCase().startsWith("sqlite_")) {
    throw new IdempotencyOptionsError("table", `names starting with "sqlite_" are reserved by SQLite.`);
  }
  if (table.toLowerCase() === SCHEMA_TABLE) {
    throw new IdempotencyOptionsError("table", `"${SCHEMA_TABLE}" is the store's own schema table.`);
  }

  const synchronous = options.synchronous ?? "NORMAL";
  if (synchronous !== "NORMAL" && synchronous !== "FULL") {
    throw new IdempotencyOptionsError(
      "synchronous",
      `expected "NORMAL" or "FULL", got ${JSON.stringify(synchronous)}.`,
    );
  }
  if (options.now !== undefined && typeof options.now !== "function") {
    throw new IdempotencyOptionsError("now", "expected a function returning epoch milliseconds.");
  }

  return {
    database,
    path,
    table,
    synchronous,
    busyTimeoutMs: wholeNumberOption("busyTimeoutMs", options.busyTimeoutMs, {
      min: 0,
      unit: "milliseconds",
      fallback: 2_000,
    }),
    // Read Date.now at call time, so fake timers (vi.setSystemTime) move this store's clock too.
    now: options.now ?? (() => Date.now()),
    sweepEvery: wholeNumberOption("sweepEvery", options.sweepEvery, { min: 1, unit: "claims", fallback: 4 }),
    sweepLimit: wholeNumberOption("sweepLimit", options.sweepLimit, { min: 0, unit: "records", fallback: 8 }),
  };
}
