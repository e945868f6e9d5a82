import { randomBytes, randomUUID } from "node:crypto";
import { once } from "node:events";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import { IdempotencyStoreError } from "@idempotency/core";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/index.js";
import { tempDirectory } from "./support.js";

const directory = tempDirectory();
const betterSqlite = createRequire(import.meta.url).resolve("better-sqlite3");
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/**
 * Another thread that holds the file's write lock (`BEGIN IMMEDIATE`) until the test lets go or `maxMs`
 * passes. A thread, not this one: the store blocks this thread while it waits, as SQLite's busy handler does.
 */
async function holdWriteLock(file: string, maxMs: number): Promise<() => Promise<void>> {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     const Database = require(workerData.module);
     const db = new Database(workerData.file);
     db.exec("BEGIN IMMEDIATE");
     parentPort.postMessage("locked");
     Atomics.wait(workerData.flag, 0, 0, workerData.maxMs);
     db.exec("COMMIT");
     db.close();
     parentPort.postMessage("released");`,
    { eval: true, workerData: { file, flag, maxMs, module: betterSqlite } },
  );
  const messages: string[] = [];
  worker.on("message", (message: string) => messages.push(message));
  await once(worker, "message");
  const release = async () => {
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
    if (!messages.includes("released")) await once(worker, "message");
    await worker.terminate();
  };
  cleanups.push(release);
  return release;
}

let files = 0;
/** A store on a fresh file whose own connection answers SQLITE_BUSY at once, as on the paths where SQLite
 * skips its busy handler: only the store's retry can wait. */
async function storeThatSeesRawBusy(busyTimeoutMs: number): Promise<{ store: SqliteStore; file: string }> {
  files += 1;
  const file = `${directory}/busy-${files}.db`;
  const database = new Database(file);
  const store = new SqliteStore({ database, busyTimeoutMs });
  cleanups.push(
    () => database.close(),
    () => store.close(),
  );
  expect(await store.get(randomBytes(32).toString("hex"))).toBeNull(); // WAL, schema, statements
  database.pragma("busy_timeout = 0");
  return { store, file };
}

const claimArgs = () => ({
  token: randomUUID(),
  fingerprint: "xxh3-128:00000000000000000000000000000000",
  leaseMs: 10_000,
  ttlMs: 60_000,
  allowTakeover: false,
});

describe("SQLITE_BUSY that SQLite's busy handler let through", () => {
  it("is retried until the lock is free, within busyTimeoutMs: the claim succeeds", async () => {
    const { store, file } = await storeThatSeesRawBusy(10_000);
    const release = await holdWriteLock(file, 300); // the other thread commits after 300 ms by itself
    const key = randomBytes(32).toString("hex");
    expect(await store.begin(key, claimArgs())).toEqual({ state: "claimed", takeover: false });
    await release();
    expect(await store.get(key)).toMatchObject({ state: "in-flight" });
  });

  it("fails with IdempotencyStoreError once busyTimeoutMs has passed, applying nothing", async () => {
    const { store, file } = await storeThatSeesRawBusy(150);
    const release = await holdWriteLock(file, 10_000);
    const key = randomBytes(32).toString("hex");
    const error = await store.begin(key, claimArgs()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotencyStoreError);
    expect((error as Error).message).toBe("SqliteStore begin() failed: database is locked");
    expect((error as { cause?: { code?: string } }).cause?.code).toBe("SQLITE_BUSY");
    await release();
    expect(await store.get(key)).toBeNull();
    expect(await store.begin(key, claimArgs())).toEqual({ state: "claimed", takeover: false });
  });
});
