import { IdempotencyStoreError } from "@idempotency/core";
import { SCHEMA_TABLE, type SqliteDatabase } from "./options.js";

/**
 * The version of the records table this release reads and writes. A later release that changes the table
 * appends a migration below and bumps this number; stores of different releases sharing one file then
 * refuse a table newer than they understand instead of misreading it. The version of each records table is
 * kept in the `idempotency_schema` table of the same file.
 *
 * @example
 * ```ts
 * import { SCHEMA_VERSION } from "@idempotency/sqlite";
 * db.prepare("SELECT version FROM idempotency_schema WHERE table_name = ?").get("idempotency_records");
 * // { version: SCHEMA_VERSION }
 * ```
 */
export const SCHEMA_VERSION = 1;

/** `MIGRATIONS[v]` turns a table at version `v` into version `v + 1`; version 0 means "no table yet". */
const MIGRATIONS: ReadonlyArray<(table: string) => string> = [
  // The scoped, hashed identity is the primary key: no raw user key is ever stored. Times are epoch ms on
  // the store's clock. `token` is the owner token while in flight and NULL once completed; `response` is
  // the core's encoded response (NULL: completed without a body, or still in flight).
  (table) => `
    CREATE TABLE "${table}" (
      key TEXT PRIMARY KEY NOT NULL,
      fingerprint TEXT NOT NULL,
      token TEXT,
      response BLOB,
      lease_until INTEGER NOT NULL,
      expires_at INTEGER NOT NULL
    );
    CREATE INDEX "${table}_expires_at" ON "${table}" (expires_at);
  `,
];

/**
 * Creates the records table, or migrates it to {@link SCHEMA_VERSION}, in one `BEGIN IMMEDIATE`
 * transaction, so processes starting together on one file agree on one schema. Throws when the table is
 * newer than this release or was not made by this store.
 */
export function ensureSchema(db: SqliteDatabase, table: string): void {
  db.transaction(() => {
    db.exec(
      `CREATE TABLE IF NOT EXISTS "${SCHEMA_TABLE}" (table_name TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL)`,
    );
    const row = db.prepare(`SELECT version FROM "${SCHEMA_TABLE}" WHERE table_name = ?`).get(table) as
      | { version: number }
      | undefined;
    let version = row?.version ?? 0;
    if (version > SCHEMA_VERSION) {
      throw new IdempotencyStoreError(
        `Table "${table}" has schema version ${version}, but this release of @idempotency/sqlite understands ` +
          `versions up to ${SCHEMA_VERSION}. Upgrade @idempotency/sqlite in every process using this file.`,
      );
    }
    if (version === 0) {
      const existing = db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE")
        .get(table);
      if (existing) {
        throw new IdempotencyStoreError(
          `Table "${table}" exists but was not created by @idempotency/sqlite (no entry in "${SCHEMA_TABLE}"). ` +
            "Pass another name as the table option.",
        );
      }
    }
    for (; version < SCHEMA_VERSION; version++) {
      db.exec((MIGRATIONS[version] as (table: string) => string)(table));
    }
    db.prepare(
      `INSERT INTO "${SCHEMA_TABLE}" (table_name, version) VALUES (?, ?)
       ON CONFLICT (table_name) DO UPDATE SET version = excluded.version`,
    ).run(table, SCHEMA_VERSION);
  }).immediate();
}
