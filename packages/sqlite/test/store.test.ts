import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { IdempotencyOptionsError, IdempotencyStoreError } from "@idempotency/core";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { SCHEMA_VERSION, SqliteStore, type SqliteStoreOptions } from "../src/index.js";
import { tempDirectory } from "./support.js";

const directory = tempDirectory();
const connections: Database.Database[] = [];
const stores: SqliteStore[] = [];
afterAll(async () => {
  for (const store of stores) await store.close();
  for (const connection of connections) if (connection.open) connection.close();
});

let files = 0;
function newFile(): string {
  files += 1;
  return `${directory}/store-${files}.db`;
}
function connect(file: string): Database.Database {
  const connection = new Database(file);
  connections.push(connection);
  return connection;
}
function open(options: SqliteStoreOptions): SqliteStore {
  const store = new SqliteStore(options);
  stores.push(store);
  return store;
}
const key = () => randomBytes(32).toString("hex");
const claimArgs = (leaseMs = 10_000, ttlMs = 60_000) => ({
  token: randomUUID(),
  fingerprint: `xxh3-128:${randomBytes(16).toString("hex")}`,
  leaseMs,
  ttlMs,
  allowTakeover: true,
});

function optionError(options: unknown): IdempotencyOptionsError {
  try {
    new SqliteStore(options as SqliteStoreOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(IdempotencyOptionsError);
    return error as IdempotencyOptionsError;
  }
  throw new Error("expected the constructor to throw");
}

describe("options", () => {
  const database = new Database(":memory:");
  afterAll(() => database.close());

  it.each([
    ["database", { database, path: "x.db" }, /not both/],
    ["database", {}, /needs \{ database \}/],
    ["database", { database: { prepare() {} } }, /better-sqlite3 Database/],
    ["path", { path: "" }, /non-empty/],
    ["path", { path: 42 }, /non-empty/],
    ["table", { path: "x.db", table: "" }, /letters, digits or underscores/],
    ["table", { path: "x.db", table: "1records" }, /not starting with a digit/],
    ["table", { path: "x.db", table: "records-2" }, /letters, digits or underscores/],
    ["table", { path: "x.db", table: 'x"; DROP TABLE users; --' }, /letters, digits or underscores/],
    ["table", { path: "x.db", table: "a".repeat(65) }, /1-64/],
    ["table", { path: "x.db", table: "sqlite_records" }, /reserved by SQLite/],
    ["table", { path: "x.db", table: "idempotency_schema" }, /schema table/],
    ["synchronous", { path: "x.db", synchronous: "OFF" }, /"NORMAL" or "FULL"/],
    ["synchronous", { path: "x.db", synchronous: "normal" }, /"NORMAL" or "FULL"/],
    ["busyTimeoutMs", { path: "x.db", busyTimeoutMs: -1 }, /whole number of milliseconds, 0 or more, got -1/],
    ["busyTimeoutMs", { path: "x.db", busyTimeoutMs: 1.5 }, /whole number/],
    ["now", { path: "x.db", now: 1_700_000_000_000 }, /function/],
    ["sweepEvery", { path: "x.db", sweepEvery: 0 }, /positive whole number of claims, got 0/],
    ["sweepLimit", { path: "x.db", sweepLimit: -1 }, /whole number of records, 0 or more, got -1/],
    [
      "tableName",
      { path: "x.db", tableName: "records" },
      /unknown option. Known options: database, path, table/,
    ],
  ])("rejects an invalid %s at construction, naming it", (option, options, message) => {
    const error = optionError(options);
    expect(error.option).toBe(option);
    expect(error.code).toBe("ERR_IDEMPOTENCY_OPTIONS");
    expect(error.message).toMatch(message);
  });

  it("rejects options that are not an object", () => {
    expect(optionError(undefined).option).toBe("options");
  });

  it("accepts a 64-character table name with underscores and digits", () => {
    expect(new SqliteStore({ database, table: `_${"a1".repeat(31)}b` }).table).toHaveLength(64);
  });

  it("never touches the file at construction; the first call reports an unusable path as a store error", async () => {
    const file = `${directory}/missing-directory/store.db`;
    const store = open({ path: file });
    expect(existsSync(file)).toBe(false);
    const failure = await store.get(key()).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as IdempotencyStoreError).code).toBe("ERR_IDEMPOTENCY_STORE");
    expect((failure as IdempotencyStoreError).message).toMatch(/^SqliteStore get\(\) failed: /);
    expect((failure as IdempotencyStoreError).cause).toBeInstanceOf(Error);
  });
});

describe("connection and schema", () => {
  it("puts the connection in WAL mode with the busy timeout and synchronous NORMAL by default", async () => {
    const database = connect(newFile());
    await open({ database, busyTimeoutMs: 1_234 }).get(key());
    expect(database.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(database.pragma("busy_timeout", { simple: true })).toBe(1_234);
    expect(database.pragma("synchronous", { simple: true })).toBe(1); // NORMAL
  });

  it("waits up to 2 seconds for a write lock by default", async () => {
    const database = connect(newFile());
    await open({ database }).get(key());
    expect(database.pragma("busy_timeout", { simple: true })).toBe(2_000);
  });

  it("uses synchronous FULL when asked", async () => {
    const database = connect(newFile());
    await open({ database, synchronous: "FULL" }).get(key());
    expect(database.pragma("synchronous", { simple: true })).toBe(2); // FULL
  });

  it("creates the table and its schema version on first use, and only then", async () => {
    const file = newFile();
    const database = connect(file);
    const store = open({ database, table: "keys" });
    const tables = () =>
      database.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    expect(tables()).toEqual([]);
    await store.get(key());
    expect(tables()).toEqual(["idempotency_schema", "keys"]);
    expect(database.prepare("SELECT table_name, version FROM idempotency_schema").all()).toEqual([
      { table_name: "keys", version: SCHEMA_VERSION },
    ]);
    expect(SCHEMA_VERSION).toBe(1);
    expect(
      database
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'keys' ORDER BY name")
        .pluck()
        .all(),
    ).toEqual(["keys_expires_at", "sqlite_autoindex_keys_1"]);
  });

  it("refuses a table whose schema is newer than this release understands", async () => {
    const database = connect(newFile());
    await open({ database }).get(key());
    database
      .prepare("UPDATE idempotency_schema SET version = 2 WHERE table_name = ?")
      .run("idempotency_records");
    const failure = await open({ database })
      .get(key())
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as Error).message).toBe(
      'Table "idempotency_records" has schema version 2, but this release of @idempotency/sqlite understands ' +
        "versions up to 1. Upgrade @idempotency/sqlite in every process using this file.",
    );
  });

  it("refuses to use a table of the same name that it did not create", async () => {
    const database = connect(newFile());
    database.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY)");
    const failure = await open({ database, table: "orders" })
      .begin(key(), claimArgs())
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as Error).message).toMatch(
      /^Table "orders" exists but was not created by @idempotency\/sqlite/,
    );
    expect(database.prepare("SELECT count(*) FROM orders").pluck().get()).toBe(0);
  });

  it("keeps two tables on one file independent", async () => {
    const database = connect(newFile());
    const first = open({ database, table: "first_records" });
    const second = open({ database, table: "second_records" });
    const shared = key();
    expect(await first.begin(shared, claimArgs())).toEqual({ state: "claimed", takeover: false });
    expect(await second.begin(shared, claimArgs())).toEqual({ state: "claimed", takeover: false });
    expect(await second.delete(shared)).toBe(true);
    expect((await first.get(shared))?.state).toBe("in-flight");
  });

  it("keeps records across a restart of the store", async () => {
    const file = newFile();
    const before = new SqliteStore({ path: file });
    const record = key();
    const args = claimArgs();
    await before.begin(record, args);
    const response = Uint8Array.from(randomBytes(4_096));
    expect(await before.complete(record, args.token, response, 60_000)).toBe(true);
    await before.close();

    const after = open({ path: file });
    const begun = await after.begin(record, claimArgs());
    expect(begun).toEqual({
      state: "completed",
      fingerprint: args.fingerprint,
      response: expect.any(Uint8Array),
    });
    expect(Buffer.compare(Buffer.from((begun as { response: Uint8Array }).response), response)).toBe(0);
  });
});

describe("failures", () => {
  it("reports a write lock held past the busy timeout as IdempotencyStoreError with SQLITE_BUSY as cause", async () => {
    const file = newFile();
    const store = open({ path: file, busyTimeoutMs: 50 });
    await store.get(key()); // creates the schema
    const blocker = connect(file);
    blocker.exec("BEGIN IMMEDIATE");
    const record = key();
    const failure = await store.begin(record, claimArgs()).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as Error).message).toMatch(/^SqliteStore begin\(\) failed: database is locked/);
    expect(((failure as Error).cause as { code?: string }).code).toBe("SQLITE_BUSY");
    blocker.exec("ROLLBACK");
    expect(await store.begin(record, claimArgs())).toEqual({ state: "claimed", takeover: false });
  });

  it("after close(), a store on a path has closed its file and every method rejects with IdempotencyStoreError", async () => {
    const store = new SqliteStore({ path: newFile() });
    const record = key();
    await store.begin(record, claimArgs());
    await store.close();
    await store.close(); // idempotent
    for (const call of [
      () => store.begin(record, claimArgs()),
      () => store.complete(record, "t", null, 1_000),
      () => store.extend(record, "t", 1_000),
      () => store.release(record, "t"),
      () => store.get(record),
      () => store.delete(record),
      () => store.sweep(),
    ]) {
      await expect(call()).rejects.toThrow(IdempotencyStoreError);
    }
    await expect(store.get(record)).rejects.toThrow("SqliteStore get() was called after close().");
  });

  it("close() leaves a database it was given open", async () => {
    const database = connect(newFile());
    const store = new SqliteStore({ database });
    await store.begin(key(), claimArgs());
    await store.close();
    expect(database.open).toBe(true);
    expect(database.prepare("SELECT count(*) FROM idempotency_records").pluck().get()).toBe(1);
    await expect(store.begin(key(), claimArgs())).rejects.toThrow(IdempotencyStoreError);
  });

  it("reports a database closed by its owner as IdempotencyStoreError", async () => {
    const database = connect(newFile());
    const store = open({ database });
    await store.get(key());
    database.close();
    const failure = await store.begin(key(), claimArgs()).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as Error).cause).toBeInstanceOf(TypeError);
  });
});

describe("expiry and the bounded sweep", () => {
  function controlled(sweep: { sweepEvery?: number; sweepLimit?: number }) {
    const clock = { t: 1_700_000_000_000 };
    const database = connect(newFile());
    const store = open({ database, now: () => clock.t, ...sweep });
    const rows = () => database.prepare("SELECT count(*) FROM idempotency_records").pluck().get() as number;
    return { clock, database, store, rows };
  }

  it("treats expired records as absent before any sweep deletes them", async () => {
    const { clock, store, rows } = controlled({ sweepLimit: 0 });
    const inFlight = key();
    const completed = key();
    const holder = claimArgs(1_000, 5_000);
    const owner = claimArgs(1_000, 5_000);
    await store.begin(inFlight, holder);
    await store.begin(completed, owner);
    await store.complete(completed, owner.token, new Uint8Array([1]), 5_000);
    clock.t += 5_000;
    expect(rows()).toBe(2);
    expect(await store.get(inFlight)).toBeNull();
    expect(await store.get(completed)).toBeNull();
    expect(await store.complete(completed, owner.token, null, 5_000)).toBe(false);
    expect(await store.extend(inFlight, holder.token, 5_000)).toBe(false);
    expect(await store.release(inFlight, holder.token)).toBe(false);
    expect(await store.delete(completed)).toBe(false);
    expect(await store.begin(inFlight, { ...claimArgs(), allowTakeover: false })).toEqual({
      state: "claimed",
      takeover: false,
    });
    expect(rows()).toBe(1);
  });

  it("deletes at most sweepLimit expired records every sweepEvery claims, oldest first", async () => {
    const { clock, database, store, rows } = controlled({ sweepEvery: 4, sweepLimit: 6 });
    // 3 claims: no sweep yet. Then 97 more, each expiring 1 ms later than the one before.
    for (let i = 0; i < 100; i++) {
      await store.begin(key(), claimArgs(1_000, 10_000 + i));
      if (i === 2) expect(rows()).toBe(3);
    }
    expect(rows()).toBe(100); // nothing had expired when the 25 sweeps ran
    clock.t += 10_050; // the first 51 have expired

    await store.begin(key(), claimArgs(1_000, 1_000_000));
    await store.begin(key(), claimArgs(1_000, 1_000_000));
    await store.begin(key(), claimArgs(1_000, 1_000_000));
    expect(rows()).toBe(103);
    await store.begin(key(), claimArgs(1_000, 1_000_000)); // the 4th claim sweeps 6
    expect(rows()).toBe(98);
    const oldest = database.prepare("SELECT min(expires_at) FROM idempotency_records").pluck().get();
    expect(oldest).toBe(1_700_000_000_000 + 10_006);

    // An explicit sweep deletes what is left of the expired ones, up to its limit.
    expect(await store.sweep(40)).toBe(40);
    expect(await store.sweep()).toBe(5);
    expect(await store.sweep()).toBe(0);
    expect(rows()).toBe(53);
    await expect(store.sweep(-1)).rejects.toThrow(IdempotencyStoreError);
  });

  it("by default deletes up to 8 expired records every 4 claims", async () => {
    const { clock, store, rows } = controlled({});
    for (let i = 0; i < 20; i++) await store.begin(key(), claimArgs(5, 10)); // 5 sweeps, nothing expired
    clock.t += 20;
    for (let i = 0; i < 3; i++) await store.begin(key(), claimArgs(1_000, 1_000_000));
    expect(rows()).toBe(23);
    await store.begin(key(), claimArgs(1_000, 1_000_000));
    expect(rows()).toBe(16);
  });

  it("does not count answers that claim nothing towards the next sweep", async () => {
    const { clock, store, rows } = controlled({ sweepEvery: 2, sweepLimit: 10 });
    const held = key();
    await store.begin(held, claimArgs(1_000, 1_000_000)); // claim 1
    await store.begin(key(), claimArgs(5, 10)); // claim 2: sweeps, nothing expired yet
    await store.begin(key(), claimArgs(5, 10)); // claim 3
    clock.t += 20;
    for (let i = 0; i < 5; i++) await store.begin(held, claimArgs()); // in flight: no claim
    expect(rows()).toBe(3);
    await store.begin(key(), claimArgs(1_000, 1_000_000)); // claim 4: sweeps both expired ones
    expect(rows()).toBe(2);
  });
});
