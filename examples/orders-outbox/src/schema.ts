import { PostgresStore } from "@idempotency/postgres";
import type pg from "pg";

/** The tables of one deployment of the example; a prefix keeps test runs apart in one database. */
export interface Tables {
  /** The idempotency records of the HTTP API and of the consumers. */
  records: string;
  orders: string;
  /** Events to publish, written in the same transaction as the order. */
  outbox: string;
  /** The "external" effect: one row per e-mail sent. Deliberately without a unique constraint. */
  emails: string;
}

export function tables(prefix = "shop"): Tables {
  return {
    records: `${prefix}_idempotency`,
    orders: `${prefix}_orders`,
    outbox: `${prefix}_outbox`,
    emails: `${prefix}_emails_sent`,
  };
}

/** Creates the tables when missing (a migration, in a real service). */
export async function createSchema(pool: pg.Pool, names: Tables): Promise<void> {
  await new PostgresStore({ pool, table: names.records }).createTable();
  await pool.query(`
    CREATE TABLE IF NOT EXISTS ${names.orders} (
      id bigserial PRIMARY KEY,
      tenant text NOT NULL,
      item text NOT NULL,
      quantity integer NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS ${names.outbox} (
      id bigserial PRIMARY KEY,
      topic text NOT NULL,
      payload jsonb NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      sent_at timestamptz
    );
    CREATE TABLE IF NOT EXISTS ${names.emails} (
      outbox_id bigint NOT NULL,
      consumer text NOT NULL,
      sent_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )`);
}

/** Drops the tables (tests). */
export async function dropSchema(pool: pg.Pool, names: Tables): Promise<void> {
  for (const table of Object.values(names)) await pool.query(`DROP TABLE IF EXISTS ${table}`);
}
