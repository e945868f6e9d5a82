// Construction-time validation, write concern, deadlines, error mapping and close(), against the
// recorded-call double (see recorded-collection.ts). No MongoDB is involved.
import { IdempotencyOptionsError, IdempotencyStoreError } from "@idempotency/core";
import { type Collection, MongoClient, MongoNetworkError, MongoServerError } from "mongodb";
import { afterAll, describe, expect, it } from "vitest";
import { MongoStore, type MongoStoreDocument, type MongoStoreOptions } from "../src/index.js";
import { RecordedCollection } from "./recorded-collection.js";

const KEY = "b".repeat(64);
const TOKEN = "token-1";
const args = { token: TOKEN, fingerprint: "xxh3-128:f", leaseMs: 1_000, ttlMs: 2_000, allowTakeover: true };

function asCollection(double: RecordedCollection): Collection<MongoStoreDocument> {
  return double as unknown as Collection<MongoStoreDocument>;
}

function optionsError(make: () => unknown): IdempotencyOptionsError {
  try {
    make();
  } catch (error) {
    expect(error).toBeInstanceOf(IdempotencyOptionsError);
    return error as IdempotencyOptionsError;
  }
  throw new Error("expected an IdempotencyOptionsError");
}

describe("options are checked at construction", () => {
  const collection = asCollection(new RecordedCollection());

  it("accepts a driver Collection of an unconnected MongoClient without any I/O", async () => {
    const client = new MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100");
    expect(
      () => new MongoStore({ collection: client.db("app").collection("idempotency_records") }),
    ).not.toThrow();
    await client.close();
  });

  it("names a missing or wrong collection and shows how to pass one", () => {
    const missing = optionsError(() => new MongoStore({} as MongoStoreOptions));
    expect(missing.option).toBe("collection");
    expect(missing.code).toBe("ERR_IDEMPOTENCY_OPTIONS");
    expect(missing.message).toBe(
      'Invalid option "collection": required: a MongoDB driver Collection (mongodb 6 or 7), e.g. ' +
        '`new MongoStore({ collection: client.db("app").collection("idempotency_records") })`; got undefined.',
    );
    const db = optionsError(
      () =>
        new MongoStore({
          collection: { findOneAndUpdate() {}, aggregate() {} } as unknown as Collection<MongoStoreDocument>,
        }),
    );
    expect(db.message).toMatch(
      /the object given has no updateOne, deleteOne, findOneAndDelete, createIndex\.$/,
    );
  });

  it("rejects options that are not an object, and unknown option names", () => {
    expect(optionsError(() => new MongoStore(undefined as unknown as MongoStoreOptions)).option).toBe(
      "options",
    );
    const unknown = optionsError(
      () => new MongoStore({ collection, client: {} } as unknown as MongoStoreOptions),
    );
    expect(unknown.option).toBe("client");
    expect(unknown.message).toMatch(/unknown option\. Known options: collection, writeConcern, timeoutMs\./);
  });

  it.each([
    [
      { w: 0 },
      /w: 0 \(unacknowledged\) cannot tell which request won a claim; use \{ w: "majority" \} or \{ w: 1 \}/,
    ],
    [{ w: -1 }, /w must be "majority", a whole number of members \(at least 1\) or a tag set name, got -1/],
    [{ w: "" }, /w must be "majority"/],
    [{ w: 1.5 }, /w must be "majority"/],
    [{ wtimeout: 5 }, /unknown field "wtimeout"\. Known fields: w, journal, wtimeoutMS\./],
    [{ journal: "yes" }, /journal must be true or false, got "yes"/],
    [{ wtimeoutMS: 0 }, /wtimeoutMS must be a positive whole number of milliseconds, got 0/],
    ["majority", /expected an object such as \{ w: "majority" \} or \{ w: 1 \}, got "majority"/],
  ])("rejects writeConcern %j", (writeConcern, message) => {
    const error = optionsError(
      () => new MongoStore({ collection, writeConcern } as unknown as MongoStoreOptions),
    );
    expect(error.option).toBe("writeConcern");
    expect(error.message).toMatch(message);
  });

  it.each([0, -5, 1.5, "2000", Number.NaN])("rejects timeoutMs %j", (timeoutMs) => {
    const error = optionsError(
      () => new MongoStore({ collection, timeoutMs } as unknown as MongoStoreOptions),
    );
    expect(error.option).toBe("timeoutMs");
    expect(error.message).toMatch(/expected a positive whole number of milliseconds/);
  });
});

describe("write concern", () => {
  it('is { w: "majority" } on every write by default', async () => {
    const double = new RecordedCollection()
      .script("findOneAndUpdate", { value: { state: "in-flight", fingerprint: "f", owner: TOKEN } })
      .script("updateOne", { value: { matchedCount: 1 } }, { value: { matchedCount: 1 } })
      .script("deleteOne", { value: { deletedCount: 1 } })
      .script("findOneAndDelete", { value: null })
      .script("createIndex", { value: "x" });
    const store = new MongoStore({ collection: asCollection(double) });
    await store.begin(KEY, args);
    await store.extend(KEY, TOKEN, 1_000);
    await store.complete(KEY, TOKEN, null, 1_000);
    await store.release(KEY, TOKEN);
    await store.delete(KEY);
    await store.ensureIndexes();
    expect(double.calls.map((call) => (call.args.at(-1) as { writeConcern: unknown }).writeConcern)).toEqual(
      Array(6).fill({ w: "majority" }),
    );
  });

  it("is the configured one when given", async () => {
    const double = new RecordedCollection()
      .script("findOneAndUpdate", { value: { state: "in-flight", fingerprint: "f", owner: TOKEN } })
      .script("updateOne", { value: { matchedCount: 1 } });
    const store = new MongoStore({
      collection: asCollection(double),
      writeConcern: { w: 1, journal: true, wtimeoutMS: 500 },
    });
    await store.begin(KEY, args);
    await store.complete(KEY, TOKEN, new Uint8Array(1), 1_000);
    for (const call of double.calls) {
      expect((call.args.at(-1) as { writeConcern: unknown }).writeConcern).toEqual({
        w: 1,
        journal: true,
        wtimeoutMS: 500,
      });
    }
  });
});

describe("deadlines", () => {
  it("sends the caller's deadline as maxTimeMS", async () => {
    const double = new RecordedCollection()
      .script("findOneAndUpdate", { value: { state: "in-flight", fingerprint: "f", owner: TOKEN } })
      .script("aggregate", { value: [] });
    const store = new MongoStore({ collection: asCollection(double), timeoutMs: 900 });
    await store.begin(KEY, args, { timeoutMs: 1_234 });
    await store.get(KEY);
    expect(double.calls.map((call) => (call.args.at(-1) as { maxTimeMS: number }).maxTimeMS)).toEqual([
      1_234, 900,
    ]);
  });

  it("fails a call MongoDB has not answered by the deadline with IdempotencyStoreError", async () => {
    const double = new RecordedCollection().script("findOneAndUpdate", { hang: true });
    const store = new MongoStore({ collection: asCollection(double) });
    await expect(store.begin(KEY, args, { timeoutMs: 30 })).rejects.toThrow(
      /^MongoStore begin failed: MongoDB did not answer within 30 ms\./,
    );
  });

  it("names maxTimeMS when the server stopped the operation (MaxTimeMSExpired, code 50)", async () => {
    const cause = new MongoServerError({
      message: "operation exceeded time limit",
      code: 50,
      codeName: "MaxTimeMSExpired",
    });
    const double = new RecordedCollection().script("updateOne", { error: cause });
    const store = new MongoStore({ collection: asCollection(double) });
    await expect(store.extend(KEY, TOKEN, 1_000, { timeoutMs: 75 })).rejects.toMatchObject({
      message: "MongoStore extend failed: the server stopped it at the caller's deadline (maxTimeMS 75).",
      cause,
    });
  });
});

describe("driver errors become IdempotencyStoreError with the driver's error as cause", () => {
  const network = new MongoNetworkError("connection 3 to 127.0.0.1:27017 closed");
  const server = new MongoServerError({
    message: "not primary",
    code: 10107,
    codeName: "NotWritablePrimary",
  });
  const calls: Array<[string, (store: MongoStore) => Promise<unknown>]> = [
    ["begin", (store) => store.begin(KEY, args)],
    ["complete", (store) => store.complete(KEY, TOKEN, new Uint8Array([1]), 1_000)],
    ["extend", (store) => store.extend(KEY, TOKEN, 1_000)],
    ["release", (store) => store.release(KEY, TOKEN)],
    ["get", (store) => store.get(KEY)],
    ["delete", (store) => store.delete(KEY)],
  ];

  for (const [name, run] of calls) {
    it(`${name}: a network error and a server error`, async () => {
      const double = new RecordedCollection();
      for (const method of [
        "findOneAndUpdate",
        "updateOne",
        "deleteOne",
        "findOneAndDelete",
        "aggregate",
      ] as const) {
        double.script(method, { error: network }, { error: server });
      }
      const store = new MongoStore({ collection: asCollection(double) });
      const first = await run(store).catch((error: unknown) => error);
      expect(first).toBeInstanceOf(IdempotencyStoreError);
      expect(first).toMatchObject({
        code: "ERR_IDEMPOTENCY_STORE",
        message: `MongoStore ${name} failed: connection 3 to 127.0.0.1:27017 closed`,
        cause: network,
      });
      const second = await run(store).catch((error: unknown) => error);
      expect(second).toMatchObject({
        message: `MongoStore ${name} failed: not primary (code 10107)`,
        cause: server,
      });
    });
  }

  it("a corrupt record read by get is an IdempotencyStoreError, not a crash", async () => {
    const double = new RecordedCollection().script(
      "aggregate",
      {
        value: [
          { state: "in-flight", fingerprint: "f", owner: TOKEN, leaseRemainingMs: "soon", ttlRemainingMs: 1 },
        ],
      },
      { value: [{ state: "completed", fingerprint: "f", response: "not bytes", ttlRemainingMs: 1 }] },
    );
    const store = new MongoStore({ collection: asCollection(double) });
    await expect(store.get(KEY)).rejects.toThrow(
      /MongoStore get failed: unexpected record in MongoDB \("soon"\)/,
    );
    await expect(store.get(KEY)).rejects.toThrow(/MongoStore get failed: unexpected record in MongoDB/);
  });
});

describe("close()", () => {
  const stores: MongoStore[] = [];
  afterAll(() => Promise.all(stores.map((store) => store.close())));

  it("makes every later call fail with IdempotencyStoreError without touching the collection", async () => {
    const double = new RecordedCollection();
    const store = new MongoStore({ collection: asCollection(double) });
    stores.push(store);
    await store.close();
    for (const call of [
      () => store.begin(KEY, args),
      () => store.complete(KEY, TOKEN, null, 1_000),
      () => store.extend(KEY, TOKEN, 1_000),
      () => store.release(KEY, TOKEN),
      () => store.get(KEY),
      () => store.delete(KEY),
      () => store.ensureIndexes(),
    ]) {
      await expect(call()).rejects.toThrow(/^MongoStore \w+ failed: the store was closed\.$/);
    }
    expect(double.calls).toEqual([]);
  });
});
