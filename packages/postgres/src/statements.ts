/**
 * The SQL of `PostgresStore`: one statement per store operation, so each operation is atomic on its own.
 *
 * Times are `timestamptz` on the database's clock. `now()` is the start of the current transaction; every
 * statement here runs on its own (autocommit), so it is the start of the statement, and it stays the same
 * for the whole statement: every decision in one statement is taken at the same instant. (`clock_timestamp()`
 * changes between calls within one statement, so two conditions could disagree about whether a lease ended.)
 *
 * Parameters are numbered: `$1` is always the key.
 */

/** `$n` milliseconds from now, as a `timestamptz`. The cast makes `pg`'s text parameter a number. */
function msFromNow(param: string): string {
  return `now() + ${param}::float8 * interval '1 millisecond'`;
}

/**
 * Whole milliseconds from `clock` until `column`, 0 once it has passed. Rounded up, so a live lease never
 * reads as 0 (0 means expired in the contract) and never exceeds the duration it was set to.
 */
function msUntil(column: string, clock = "now()"): string {
  return `greatest(0, ceil(extract(epoch FROM ${column} - ${clock}) * 1000))::float8`;
}

/** Whether a record is live: its TTL has not run out. An expired row counts as absent everywhere. */
const LIVE = "expires_at > now()";

/**
 * The DDL of the records table. Run it in your migrations, or call `store.createTable()`.
 *
 * - `key` is the hashed identity (64 hex characters); the `"C"` collation compares bytes, the cheapest
 *   order for a primary key that is never sorted for people.
 * - `token` is the owner token while the record is in flight and `NULL` once it is completed.
 * - `attempt` counts claims of the record: 1 for the first, one more for each takeover of an expired lease.
 * - `response` is the core's encoded response; `NULL` while in flight, or when completed without a body.
 * - `lease_until` and `expires_at` are the end of the lease and of the TTL.
 *
 * The index on `expires_at` serves `sweep()`, which deletes expired rows; no query relies on it for
 * correctness, since every statement checks expiry itself.
 *
 * @param table An already validated table name, e.g. `"idempotency_records"` or `"app.idempotency"`.
 *
 * @example
 * ```ts
 * import { createTableSql } from "@idempotency/postgres";
 *
 * // in a migration
 * await client.query(createTableSql("app.idempotency"));
 * ```
 */
export function createTableSql(table: string): string {
  const name = quoteTable(table);
  const indexName = quoteIdentifier(`${tableOnly(table)}_expires_at`);
  return `CREATE TABLE IF NOT EXISTS ${name} (
  key text COLLATE "C" PRIMARY KEY,
  fingerprint text NOT NULL,
  token text,
  attempt integer NOT NULL,
  response bytea,
  lease_until timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ${indexName} ON ${name} (expires_at);`;
}

/** The statements of one table, built once per store. */
export interface Statements {
  begin: string;
  complete: string;
  /** `complete` inside `transaction()`: also checks that the row was claimed in the current transaction. */
  completeInTransaction: string;
  extend: string;
  release: string;
  get: string;
  delete: string;
  sweep: string;
}

/** What `begin` returns: the row after the statement, whoever wrote it. */
export interface BeginRow {
  /** Whether this call's token owns the row now, i.e. this call claimed it. */
  claimed: boolean;
  /** When `claimed`: the claim replaced a live in-flight record whose lease had expired. */
  takeover: boolean;
  completed: boolean;
  fingerprint: string;
  response: Buffer | null;
  lease_remaining_ms: number;
}

/** What `get` returns for a live row. */
export interface GetRow {
  token: string | null;
  fingerprint: string;
  response: Buffer | null;
  lease_remaining_ms: number;
  ttl_remaining_ms: number;
}

/**
 * Builds the statements for `table`, which must have passed {@link isValidTableName}: it is spliced into the SQL.
 */
export function statementsFor(table: string): Statements {
  const t = quoteTable(table);

  // May this call claim the existing row `r`? When its TTL has run out (it counts as absent), or when the
  // caller allows a takeover and the row is in flight with its lease over. A completed row (token NULL)
  // is never taken over.
  const expired = "r.expires_at <= now()";
  const claimable = `(${expired} OR ($6::boolean AND r.token IS NOT NULL AND r.lease_until <= now()))`;
  const claimOrKeep = (column: string, claimedValue: string) =>
    `${column} = CASE WHEN ${claimable} THEN ${claimedValue} ELSE r.${column} END`;

  return {
    // $1 key, $2 fingerprint, $3 token, $4 leaseMs, $5 ttlMs, $6 allowTakeover.
    //
    // ONE statement that claims or reports. The INSERT claims an absent key. When a row exists, even one a
    // concurrent transaction inserted a moment ago, ON CONFLICT locks it and evaluates the SET on its
    // latest version; every column either takes the claim's value or keeps its own. The update always
    // happens, so RETURNING always yields the row as it now is; a `DO UPDATE ... WHERE` would return
    // nothing when it declines to claim, and a second SELECT would be check-then-act. Tokens are fresh
    // random values, so a row holding token $3 was claimed by this call. RETURNING sees only the new row,
    // so `attempt` (1 for a fresh claim, one more per takeover) is what tells a takeover apart.
    //
    // A begin that waited for another's row lock decides at its own start, a little before the row it
    // reads was written: it may see a lease as live for the few milliseconds it waited, never the reverse.
    // The time left is measured with clock_timestamp(), after the wait, so it never exceeds the lease the
    // owner was given.
    begin: `
      INSERT INTO ${t} AS r (key, fingerprint, token, attempt, response, lease_until, expires_at)
      VALUES ($1, $2, $3, 1, NULL, ${msFromNow("$4")}, ${msFromNow("greatest($4::float8, $5::float8)")})
      ON CONFLICT (key) DO UPDATE SET
        ${claimOrKeep("fingerprint", "excluded.fingerprint")},
        ${claimOrKeep("token", "excluded.token")},
        attempt = CASE WHEN ${expired} THEN 1 WHEN ${claimable} THEN r.attempt + 1 ELSE r.attempt END,
        ${claimOrKeep("response", "NULL")},
        ${claimOrKeep("lease_until", "excluded.lease_until")},
        ${claimOrKeep("expires_at", "excluded.expires_at")}
      RETURNING token IS NOT DISTINCT FROM $3 AS claimed, attempt > 1 AS takeover, token IS NULL AS completed,
        fingerprint, response, ${msUntil("lease_until", "clock_timestamp()")} AS lease_remaining_ms`,

    // $1 key, $2 token, $3 response (NULL: completed without a body), $4 ttlMs.
    // Fenced: changes the row only while $2 owns it and it is live. The new TTL runs from completion.
    complete: `
      UPDATE ${t} SET token = NULL, response = $3, expires_at = ${msFromNow("$4")}
      WHERE key = $1 AND token = $2 AND ${LIVE}`,

    // $1 key, $2 token, $3 response, $4 ttlMs. As `complete`, within the transaction that claimed the row:
    // `xmin` is the transaction that wrote the row's current version, and `txid_current()` (64 bits, epoch
    // included) is this one. When the caller's function ended the transaction with its own COMMIT, the row
    // was written by an earlier transaction and nothing matches, so that mistake is reported, not hidden.
    completeInTransaction: `
      UPDATE ${t} SET token = NULL, response = $3, expires_at = ${msFromNow("$4")}
      WHERE key = $1 AND token = $2 AND ${LIVE} AND xmin::text::bigint = txid_current() % 4294967296`,

    // $1 key, $2 token, $3 leaseMs. Fenced. Pushes the TTL out to the new lease end, never cuts it short.
    extend: `
      UPDATE ${t} SET lease_until = ${msFromNow("$3")}, expires_at = greatest(expires_at, ${msFromNow("$3")})
      WHERE key = $1 AND token = $2 AND ${LIVE}`,

    // $1 key, $2 token. Fenced: only the owner frees the key.
    release: `DELETE FROM ${t} WHERE key = $1 AND token = $2 AND ${LIVE}`,

    // $1 key.
    get: `
      SELECT token, fingerprint, response, ${msUntil("lease_until")} AS lease_remaining_ms,
        ${msUntil("expires_at")} AS ttl_remaining_ms
      FROM ${t} WHERE key = $1 AND ${LIVE}`,

    // $1 key. Deletes the row whatever its state; reports whether it was live.
    delete: `DELETE FROM ${t} WHERE key = $1 RETURNING ${LIVE} AS live`,

    // $1 limit. Garbage collection only: every statement above already treats an expired row as absent.
    // FOR UPDATE checks `expires_at` again on the newest version of each row it locks, so a row claimed
    // anew meanwhile is never deleted; SKIP LOCKED passes over rows another statement is changing.
    sweep: `
      DELETE FROM ${t} WHERE key IN (
        SELECT key FROM ${t} WHERE expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
      )`,
  };
}

/** A schema-qualified or plain name of lower-case letters, digits and `_`: safe to quote and splice. */
const TABLE_NAME = /^(?:([a-z_][a-z0-9_]{0,62})\.)?([a-z_][a-z0-9_]{0,51})$/;

/**
 * Whether `table` is a name the store accepts: `table` or `schema.table`, lower-case letters, digits and
 * `_`, not starting with a digit; at most 63 characters for the schema and 52 for the table, so that the
 * index name `<table>_expires_at` fits PostgreSQL's 63-byte limit.
 *
 * @example
 * ```ts
 * import { isValidTableName } from "@idempotency/postgres";
 *
 * isValidTableName("app.idempotency"); // true
 * isValidTableName("Orders"); // false: lower-case only
 * ```
 */
export function isValidTableName(table: unknown): table is string {
  return typeof table === "string" && TABLE_NAME.test(table);
}

function tableOnly(table: string): string {
  return table.slice(table.indexOf(".") + 1);
}

function quoteIdentifier(name: string): string {
  return `"${name}"`;
}

/** `"schema"."table"` or `"table"`. Quoting keeps reserved words such as `order` usable as names. */
export function quoteTable(table: string): string {
  return table.split(".").map(quoteIdentifier).join(".");
}
