import { randomBytes, randomUUID } from "node:crypto";
import { createIdempotency, IdempotencyOptionsError, IdempotencyStoreError } from "@idempotency/core";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { createTableSql, PostgresStore } from "../src/index.js";
import { createTableBeforeAll, postgresReachable, uniqueTableName, usePools } from "./support/fixture.js";

const LONG = { leaseMs: 60_000, ttlMs: 600_000 };

function newKey(): string {
  return randomBytes(32).toString("hex");
}

function claimArgs(allowTakeover = false) {
  return { token: randomUUID(), fingerprint: `xxh3-128:${randomUUID()}`, ...LONG, allowTakeover };
}

/** Runs `create` and returns what it threw, failing when it threw nothing. */
function thrownBy(create: () => unknown): unknown {
  try {
    create();
  } catch (error) {
    return error;
  }
  throw new Error("expected a throw");
}

describe("PostgresStore options", () => {
  // A stand-in with a query method: the constructor must not call it.
  const fakePool = { query: () => Promise.reject(new Error("the constructor ran a query")) } as never;

  it.each([
    ["options", undefined],
    ["pool", {}],
    ["pool", { pool: {} }],
    ["poolSize", { pool: fakePool, poolSize: 3 }],
    ["table", { pool: fakePool, table: "Orders" }],
    ["table", { pool: fakePool, table: "1records" }],
    ["table", { pool: fakePool, table: "a.b.c" }],
    ["table", { pool: fakePool, table: 'records"; DROP TABLE users; --' }],
    ["table", { pool: fakePool, table: "x".repeat(53) }],
  ])("rejects a bad %s with IdempotencyOptionsError naming it", (option, options) => {
    const error = thrownBy(() => new PostgresStore(options as never));
    expect(error).toBeInstanceOf(IdempotencyOptionsError);
    expect((error as IdempotencyOptionsError).option).toBe(option);
  });

  it("accepts a plain or schema-qualified table of up to 52 characters, and defaults it", () => {
    expect(new PostgresStore({ pool: fakePool }).table).toBe("idempotency_records");
    expect(new PostgresStore({ pool: fakePool, table: "app.idempotency" }).table).toBe("app.idempotency");
    expect(new PostgresStore({ pool: fakePool, table: "x".repeat(52) }).table).toBe("x".repeat(52));
  });

  it("quotes the names in the DDL", () => {
    expect(createTableSql("app.order")).toContain('CREATE TABLE IF NOT EXISTS "app"."order" (');
    expect(createTableSql("app.order")).toContain(
      'CREATE INDEX IF NOT EXISTS "order_expires_at" ON "app"."order"',
    );
  });
});

describe.skipIf(!postgresReachable)("PostgresStore on PostgreSQL", () => {
  const table = uniqueTableName();
  const schema = uniqueTableName("idempotency_schema");
  const { pool } = usePools([table]);
  createTableBeforeAll(pool, table);

  it("createTable is idempotent and safe to call from several pools at once", async () => {
    const fresh = uniqueTableName();
    try {
      const stores = [0, 1, 2].map((i) => new PostgresStore({ pool: pool(i), table: fresh }));
      await Promise.all(stores.map((store) => store.createTable()));
      await stores[0]?.createTable();
      const { rows } = await pool().query(
        `SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
        [fresh],
      );
      expect(rows).toEqual([
        { column_name: "key", data_type: "text" },
        { column_name: "fingerprint", data_type: "text" },
        { column_name: "token", data_type: "text" },
        { column_name: "attempt", data_type: "integer" },
        { column_name: "response", data_type: "bytea" },
        { column_name: "lease_until", data_type: "timestamp with time zone" },
        { column_name: "expires_at", data_type: "timestamp with time zone" },
      ]);
    } finally {
      await pool().query(`DROP TABLE IF EXISTS ${fresh}`);
    }
  });

  it("works in a schema-qualified table", async () => {
    await pool().query(`CREATE SCHEMA ${schema}`);
    try {
      const store = new PostgresStore({ pool: pool(), table: `${schema}.records` });
      await store.createTable();
      const key = newKey();
      const args = claimArgs();
      expect(await store.begin(key, args)).toEqual({ state: "claimed", takeover: false });
      expect(await store.complete(key, args.token, Uint8Array.of(1, 2, 3), LONG.ttlMs)).toBe(true);
      const { rows } = await pool().query(`SELECT token, response FROM ${schema}.records WHERE key = $1`, [
        key,
      ]);
      expect(rows).toEqual([{ token: null, response: Buffer.from([1, 2, 3]) }]);
    } finally {
      await pool().query(`DROP SCHEMA ${schema} CASCADE`);
    }
  });

  it("tells how to create a missing table, in an IdempotencyStoreError", async () => {
    const store = new PostgresStore({ pool: pool(), table: uniqueTableName("missing") });
    const error = await store.begin(newKey(), claimArgs()).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(IdempotencyStoreError);
    expect((error as Error).message).toContain("Create the table first: await store.createTable()");
    expect(((error as Error).cause as { code?: string }).code).toBe("42P01");
  });

  it("says when the table is not the store's (a wrong schema), in an IdempotencyStoreError", async () => {
    const other = uniqueTableName("other");
    await pool().query(`CREATE TABLE ${other} (key text PRIMARY KEY, value text)`);
    try {
      const store = new PostgresStore({ pool: pool(), table: other });
      const error = await store.begin(newKey(), claimArgs()).catch((thrown: unknown) => thrown);
      expect(error).toBeInstanceOf(IdempotencyStoreError);
      expect((error as Error).message).toContain(`The table "${other}" does not have the store's columns`);
      expect(((error as Error).cause as { code?: string }).code).toBe("42703");
    } finally {
      await pool().query(`DROP TABLE IF EXISTS ${other}`);
    }
  });

  it("throws IdempotencyStoreError when PostgreSQL cannot be reached", async () => {
    // Port 1 on loopback: nothing listens, so connecting fails at once.
    const unreachable = new pg.Pool({ host: "127.0.0.1", port: 1, connectionTimeoutMillis: 2_000 });
    try {
      const store = new PostgresStore({ pool: unreachable });
      const error = await store.get(newKey()).catch((thrown: unknown) => thrown);
      expect(error).toBeInstanceOf(IdempotencyStoreError);
      expect((error as Error).message).toMatch(/^PostgresStore get failed: /);
      expect((error as Error).cause).toBeInstanceOf(Error);
    } finally {
      await unreachable.end();
    }
  });

  it("counts takeovers in the attempt column", async () => {
    const store = new PostgresStore({ pool: pool(), table });
    const key = newKey();
    expect(await store.begin(key, claimArgs())).toEqual({ state: "claimed", takeover: false });
    // End the lease in the database instead of waiting for it.
    await pool().query(`UPDATE ${table} SET lease_until = now() - interval '1 second' WHERE key = $1`, [key]);
    expect(await store.begin(key, claimArgs(true))).toEqual({ state: "claimed", takeover: true });
    const { rows } = await pool().query(`SELECT attempt FROM ${table} WHERE key = $1`, [key]);
    expect(rows).toEqual([{ attempt: 2 }]);
  });

  it("sweep deletes expired records only, at most `limit` of them", async () => {
    const store = new PostgresStore({ pool: pool(), table });
    const keys = [newKey(), newKey(), newKey(), newKey()];
    for (const key of keys) expect((await store.begin(key, claimArgs())).state).toBe("claimed");
    const [live, ...expired] = keys;
    await pool().query(`UPDATE ${table} SET expires_at = now() - interval '1 second' WHERE key = ANY($1)`, [
      expired,
    ]);

    expect(await store.sweep(0)).toBe(0);
    expect(await store.sweep(2)).toBe(2);
    expect(await store.sweep()).toBe(1);
    expect(await store.sweep()).toBe(0);
    const { rows } = await pool().query(`SELECT key FROM ${table} WHERE key = ANY($1)`, [keys]);
    expect(rows).toEqual([{ key: live }]);
    await expect(store.sweep(-1)).rejects.toBeInstanceOf(IdempotencyStoreError);
  });

  it("close() stops the store and leaves the pool open", async () => {
    const store = new PostgresStore({ pool: pool(), table });
    await store.close();
    await expect(store.get(newKey())).rejects.toThrow("PostgresStore get failed: the store was closed.");
    expect((await pool().query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  });

  it("runs a job once through the engine and returns its stored result to the duplicate", async () => {
    const idempotency = createIdempotency({
      store: new PostgresStore({ pool: pool(), table }),
      scope: "global",
    });
    let runs = 0;
    const job = async () => {
      runs += 1;
      return { charged: 1250, currency: "EUR" };
    };
    const messageId = `message-${randomUUID()}`;
    expect(await idempotency.run(messageId, job)).toEqual({ charged: 1250, currency: "EUR" });
    expect(await idempotency.run(messageId, job)).toEqual({ charged: 1250, currency: "EUR" });
    expect(runs).toBe(1);
  });
});
