// Unit tests of the commands MongoStore sends and how it reads the replies, against the recorded-call double
// (see recorded-collection.ts: expectations written by hand from MongoDB's documented semantics). The store
// contract itself is proven only by conformance.test.ts against a real MongoDB.
import { IdempotencyStoreError } from "@idempotency/core";
import { Binary, type Collection } from "mongodb";
import { describe, expect, it } from "vitest";
import { MongoStore, type MongoStoreDocument } from "../src/index.js";
import { RecordedCollection } from "./recorded-collection.js";

const KEY = "a".repeat(64);
const TOKEN = "8d0e3a4e-0a4c-4a43-9b0b-5b8f2c0f7e11";
const FINGERPRINT = "xxh3-128:0123456789abcdef0123456789abcdef";
const MAJORITY = { w: "majority" };

function storeOver(collection: RecordedCollection, options: object = {}): MongoStore {
  return new MongoStore({
    collection: collection as unknown as Collection<MongoStoreDocument>,
    ...options,
  });
}

const beginArgs = { token: TOKEN, fingerprint: FINGERPRINT, leaseMs: 30_000, ttlMs: 86_400_000 };

// Written out in full from the documented semantics: live = expiresAt is a Date after $$NOW; claim when not
// live, or (allowTakeover) in flight with a lease that is not live; otherwise put $$ROOT back unchanged.
const LIVE = { $and: [{ $eq: [{ $type: "$expiresAt" }, "date"] }, { $gt: ["$expiresAt", "$$NOW"] }] };
const LEASE_LIVE = { $and: [{ $eq: [{ $type: "$leaseUntil" }, "date"] }, { $gt: ["$leaseUntil", "$$NOW"] }] };
const IN_FLIGHT = { $eq: ["$state", { $literal: "in-flight" }] };

function expectedBeginPipeline(allowTakeover: boolean): object[] {
  return [
    {
      $replaceWith: {
        $cond: [
          {
            $or: [
              { $not: [LIVE] },
              { $and: [{ $literal: allowTakeover }, IN_FLIGHT, { $not: [LEASE_LIVE] }] },
            ],
          },
          {
            _id: { $literal: KEY },
            state: { $literal: "in-flight" },
            fingerprint: { $literal: FINGERPRINT },
            owner: { $literal: TOKEN },
            leaseUntil: { $add: ["$$NOW", { $literal: 30_000 }] },
            expiresAt: { $add: ["$$NOW", { $literal: 86_400_000 }] },
            takeover: { $and: [LIVE, IN_FLIGHT] },
          },
          "$$ROOT",
        ],
      },
    },
  ];
}

const BEGIN_OPTIONS = {
  upsert: true,
  returnDocument: "after",
  projection: {
    _id: 0,
    state: 1,
    fingerprint: 1,
    owner: 1,
    response: 1,
    takeover: 1,
    leaseRemainingMs: { $max: [0, { $toDouble: { $subtract: ["$leaseUntil", "$$NOW"] } }] },
  },
  includeResultMetadata: false,
  writeConcern: MAJORITY,
  maxTimeMS: 2_000,
};

const OWNED = { _id: { $eq: KEY }, owner: { $eq: TOKEN }, state: "in-flight", $expr: LIVE };

/** The `$set` stages of an update pipeline, as the tests read them. */
type SetStages = Array<{ $set: { response: { $literal: unknown } } }>;

function duplicateKeyError(): Error {
  return Object.assign(new Error("E11000 duplicate key error collection: app.idempotency index: _id_"), {
    code: 11000,
  });
}

describe("begin", () => {
  it("sends one findOneAndUpdate on { _id } with the claim pipeline, upsert and returnDocument after", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: {
        state: "in-flight",
        fingerprint: FINGERPRINT,
        owner: TOKEN,
        takeover: false,
        leaseRemainingMs: 30_000,
      },
    });
    const result = await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: true });
    expect(result).toEqual({ state: "claimed", takeover: false });
    expect(collection.calls).toEqual([
      { method: "findOneAndUpdate", args: [{ _id: KEY }, expectedBeginPipeline(true), BEGIN_OPTIONS] },
    ]);
  });

  it("carries allowTakeover: false into the pipeline as a literal", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: {
        state: "in-flight",
        fingerprint: FINGERPRINT,
        owner: TOKEN,
        takeover: false,
        leaseRemainingMs: 0,
      },
    });
    await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: false });
    expect(collection.callsOf("findOneAndUpdate")[0]?.[1]).toEqual(expectedBeginPipeline(false));
  });

  it("never lets the record expire before its lease: expiresAt is now + max(ttlMs, leaseMs)", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: {
        state: "in-flight",
        fingerprint: FINGERPRINT,
        owner: TOKEN,
        takeover: false,
        leaseRemainingMs: 0,
      },
    });
    await storeOver(collection).begin(KEY, {
      ...beginArgs,
      leaseMs: 5_000,
      ttlMs: 1_000,
      allowTakeover: true,
    });
    const pipeline = collection.callsOf("findOneAndUpdate")[0]?.[1] as Array<{
      $replaceWith: { $cond: [unknown, Record<string, unknown>, unknown] };
    }>;
    expect(pipeline[0]?.$replaceWith.$cond[1].expiresAt).toEqual({ $add: ["$$NOW", { $literal: 5_000 }] });
  });

  it("reports takeover when the claimed record says it replaced an expired lease", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: {
        state: "in-flight",
        fingerprint: FINGERPRINT,
        owner: TOKEN,
        takeover: true,
        leaseRemainingMs: 30_000,
      },
    });
    const result = await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: true });
    expect(result).toEqual({ state: "claimed", takeover: true });
  });

  it("reports another owner's record as in flight, with the first fingerprint and the server-measured lease", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: {
        state: "in-flight",
        fingerprint: "xxh3-128:first",
        owner: "other-token",
        takeover: false,
        leaseRemainingMs: 1234.4,
      },
    });
    const result = await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: true });
    expect(result).toEqual({ state: "in-flight", fingerprint: "xxh3-128:first", leaseRemainingMs: 1234 });
  });

  it("reports an expired lease without takeover as in flight with leaseRemainingMs 0", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: {
        state: "in-flight",
        fingerprint: FINGERPRINT,
        owner: "other-token",
        takeover: false,
        leaseRemainingMs: 0,
      },
    });
    const result = await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: false });
    expect(result).toEqual({ state: "in-flight", fingerprint: FINGERPRINT, leaseRemainingMs: 0 });
  });

  it("returns a completed record's response as a fresh copy of the BSON Binary's bytes", async () => {
    const stored = new Uint8Array([0, 255, 1, 254, 10, 13]);
    const binary = new Binary(stored);
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: { state: "completed", fingerprint: FINGERPRINT, response: binary, leaseRemainingMs: 0 },
    });
    const result = await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: true });
    expect(result).toEqual({ state: "completed", fingerprint: FINGERPRINT, response: stored });
    if (result.state !== "completed" || result.response === null) throw new Error("expected a response");
    result.response[0] = 42;
    expect(binary.buffer[0]).toBe(0);
  });

  it("reads a Buffer response (a client with promoteBuffers) and a null response", async () => {
    const collection = new RecordedCollection().script(
      "findOneAndUpdate",
      {
        value: {
          state: "completed",
          fingerprint: FINGERPRINT,
          response: Buffer.from("hi"),
          leaseRemainingMs: 0,
        },
      },
      { value: { state: "completed", fingerprint: FINGERPRINT, response: null, leaseRemainingMs: 0 } },
    );
    const store = storeOver(collection);
    const first = await store.begin(KEY, { ...beginArgs, allowTakeover: true });
    expect(first).toEqual({
      state: "completed",
      fingerprint: FINGERPRINT,
      response: new Uint8Array([104, 105]),
    });
    if (first.state === "completed") expect(Buffer.isBuffer(first.response)).toBe(false);
    expect(await store.begin(KEY, { ...beginArgs, allowTakeover: true })).toEqual({
      state: "completed",
      fingerprint: FINGERPRINT,
      response: null,
    });
  });

  it("retries a duplicate-key error (two first upserts raced) and reports the winner's record", async () => {
    const collection = new RecordedCollection().script(
      "findOneAndUpdate",
      { error: duplicateKeyError() },
      { value: { state: "in-flight", fingerprint: FINGERPRINT, owner: "winner", leaseRemainingMs: 29_990 } },
    );
    const result = await storeOver(collection).begin(KEY, { ...beginArgs, allowTakeover: true });
    expect(result).toEqual({ state: "in-flight", fingerprint: FINGERPRINT, leaseRemainingMs: 29_990 });
    const [first, second] = collection.callsOf("findOneAndUpdate");
    expect(collection.calls).toHaveLength(2);
    expect(second).toEqual(first);
  });

  it("gives up after 3 retries of duplicate-key errors with an IdempotencyStoreError", async () => {
    const errors = [duplicateKeyError(), duplicateKeyError(), duplicateKeyError(), duplicateKeyError()];
    const collection = new RecordedCollection().script(
      "findOneAndUpdate",
      ...errors.map((error) => ({ error })),
      { value: { state: "in-flight", fingerprint: FINGERPRINT, owner: TOKEN } },
    );
    const failure = await storeOver(collection)
      .begin(KEY, { ...beginArgs, allowTakeover: true })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as IdempotencyStoreError).code).toBe("ERR_IDEMPOTENCY_STORE");
    expect((failure as Error).message).toMatch(/4 attempts in a row hit a duplicate-key error \(E11000\)/);
    expect((failure as Error).cause).toBe(errors[3]);
    expect(collection.calls).toHaveLength(4);
  });

  it("does not retry other write errors", async () => {
    const cause = Object.assign(new Error("not primary"), { code: 10107 });
    const collection = new RecordedCollection().script("findOneAndUpdate", { error: cause });
    const failure = await storeOver(collection)
      .begin(KEY, { ...beginArgs, allowTakeover: true })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect((failure as Error).message).toBe("MongoStore begin failed: not primary (code 10107)");
    expect((failure as Error).cause).toBe(cause);
    expect(collection.calls).toHaveLength(1);
  });

  it("fails with IdempotencyStoreError on a reply that is no record of this store", async () => {
    const collection = new RecordedCollection().script(
      "findOneAndUpdate",
      { value: null },
      { value: { state: "archived", fingerprint: FINGERPRINT } },
      { value: { state: "in-flight", fingerprint: 7, owner: "other" } },
    );
    const store = storeOver(collection);
    for (let i = 0; i < 3; i++) {
      await expect(store.begin(KEY, { ...beginArgs, allowTakeover: true })).rejects.toThrow(
        /MongoStore begin failed: unexpected record in MongoDB/,
      );
    }
  });
});

describe("$literal around every user-derived value", () => {
  // Strings MongoDB would read as field paths or variables if they reached an expression bare.
  const hostile = {
    key: "$$CURRENT",
    token: "$owner",
    fingerprint: "$$REMOVE",
  };

  /** Every place `needle` occurs in `value`, as the path of keys leading to it. */
  function occurrences(value: unknown, needle: string, path: string[] = []): string[][] {
    if (value === needle) return [path];
    if (Array.isArray(value))
      return value.flatMap((item, i) => occurrences(item, needle, [...path, String(i)]));
    if (typeof value === "object" && value !== null) {
      return Object.entries(value).flatMap(([name, item]) => occurrences(item, needle, [...path, name]));
    }
    return [];
  }

  it("begin's pipeline holds the key, token and fingerprint only as $literal operands", async () => {
    const collection = new RecordedCollection().script("findOneAndUpdate", {
      value: { state: "in-flight", fingerprint: hostile.fingerprint, owner: hostile.token, takeover: false },
    });
    await storeOver(collection).begin(hostile.key, {
      token: hostile.token,
      fingerprint: hostile.fingerprint,
      leaseMs: 1_000,
      ttlMs: 2_000,
      allowTakeover: true,
    });
    const [filter, pipeline] = collection.callsOf("findOneAndUpdate")[0] as [object, object[]];
    expect(filter).toEqual({ _id: "$$CURRENT" }); // a query value, compared by equality, never evaluated
    for (const needle of Object.values(hostile)) {
      const found = occurrences(pipeline, needle);
      expect(found.length, needle).toBeGreaterThan(0);
      for (const path of found) expect(path.at(-1), `${needle} at ${path.join(".")}`).toBe("$literal");
    }
    // The one bare variable is the store's own: $$ROOT, the record put back unchanged.
    expect(occurrences(pipeline, "$$ROOT").map((path) => path.join("."))).toEqual(["0.$replaceWith.$cond.2"]);
  });

  it("complete and extend put the response and durations inside $literal; filters compare with $eq", async () => {
    const collection = new RecordedCollection().script(
      "updateOne",
      { value: { matchedCount: 1 } },
      { value: { matchedCount: 1 } },
    );
    const store = storeOver(collection);
    await store.complete(hostile.key, hostile.token, new Uint8Array([36, 36]), 60_000);
    await store.extend(hostile.key, hostile.token, 9_000);
    const [[completeFilter, completePipeline], [extendFilter, extendPipeline]] = collection.callsOf(
      "updateOne",
    ) as [[object, object[]], [object, object[]]];
    for (const filter of [completeFilter, extendFilter]) {
      expect(filter).toEqual({
        _id: { $eq: "$$CURRENT" },
        owner: { $eq: "$owner" },
        state: "in-flight",
        $expr: LIVE,
      });
    }
    expect(occurrences(completePipeline, "$$CURRENT")).toEqual([]);
    expect(JSON.stringify(completePipeline)).toContain('{"$literal":60000}');
    expect(JSON.stringify(extendPipeline)).toContain('{"$literal":9000}');
  });
});

describe("complete, extend, release: fenced on the owner token", () => {
  it("complete sends updateOne filtered on { _id, owner, in-flight, live } and stores the body as BSON Binary", async () => {
    const collection = new RecordedCollection().script("updateOne", {
      value: { matchedCount: 1, modifiedCount: 1 },
    });
    const response = new Uint8Array([1, 2, 3, 0, 255]);
    expect(await storeOver(collection).complete(KEY, TOKEN, response, 86_400_000)).toBe(true);
    const [filter, update, options] = collection.callsOf("updateOne")[0] as [object, SetStages, object];
    expect(filter).toEqual(OWNED);
    expect(options).toEqual({ writeConcern: MAJORITY, maxTimeMS: 2_000 });
    const body = update[0]?.$set.response.$literal;
    expect(body).toBeInstanceOf(Binary);
    expect((body as Binary).sub_type).toBe(0);
    expect(new Uint8Array((body as Binary).buffer.subarray(0, (body as Binary).position))).toEqual(response);
    expect(update).toEqual([
      {
        $set: {
          state: { $literal: "completed" },
          response: { $literal: body },
          expiresAt: { $add: ["$$NOW", { $literal: 86_400_000 }] },
        },
      },
      { $unset: ["owner", "leaseUntil", "takeover"] },
    ]);
  });

  it("complete with a null response stores null, and reports false when nothing matched", async () => {
    const collection = new RecordedCollection().script("updateOne", {
      value: { matchedCount: 0, modifiedCount: 0 },
    });
    expect(await storeOver(collection).complete(KEY, TOKEN, null, 1_000)).toBe(false);
    const update = collection.callsOf("updateOne")[0]?.[1] as SetStages;
    expect(update[0]?.$set.response).toEqual({ $literal: null });
  });

  it("complete refuses a response above the 16 MiB document limit before sending anything", async () => {
    const collection = new RecordedCollection();
    const { MAX_RESPONSE_BYTES, MongoResponseTooLargeError } = await import("../src/index.js");
    expect(MAX_RESPONSE_BYTES).toBe(16 * 1024 * 1024 - 16 * 1024);
    const failure = await storeOver(collection)
      .complete(KEY, TOKEN, new Uint8Array(MAX_RESPONSE_BYTES + 1), 1_000)
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(MongoResponseTooLargeError);
    expect(failure).toBeInstanceOf(IdempotencyStoreError);
    expect(failure).toMatchObject({
      code: "ERR_IDEMPOTENCY_STORE",
      responseBytes: MAX_RESPONSE_BYTES + 1,
      limitBytes: MAX_RESPONSE_BYTES,
    });
    expect((failure as Error).message).toMatch(/at most 16777216 bytes \(16 MiB\).*maxResponseBytes/);
    expect(collection.calls).toEqual([]);
  });

  it("complete sends a response of exactly the limit", async () => {
    const { MAX_RESPONSE_BYTES } = await import("../src/index.js");
    const collection = new RecordedCollection().script("updateOne", { value: { matchedCount: 1 } });
    expect(await storeOver(collection).complete(KEY, TOKEN, new Uint8Array(MAX_RESPONSE_BYTES), 1_000)).toBe(
      true,
    );
  });

  it("extend renews the lease from the server's now and pushes the TTL out to it, never in", async () => {
    const collection = new RecordedCollection().script(
      "updateOne",
      { value: { matchedCount: 1 } },
      { value: { matchedCount: 0 } },
    );
    const store = storeOver(collection);
    expect(await store.extend(KEY, TOKEN, 30_000)).toBe(true);
    expect(await store.extend(KEY, TOKEN, 30_000)).toBe(false);
    const leaseUntil = { $add: ["$$NOW", { $literal: 30_000 }] };
    expect(collection.callsOf("updateOne")[0]).toEqual([
      OWNED,
      [{ $set: { leaseUntil, expiresAt: { $max: ["$expiresAt", leaseUntil] } } }],
      { writeConcern: MAJORITY, maxTimeMS: 2_000 },
    ]);
  });

  it("release deletes only the owned live in-flight record and reports whether it did", async () => {
    const collection = new RecordedCollection().script(
      "deleteOne",
      { value: { deletedCount: 1 } },
      { value: { deletedCount: 0 } },
    );
    const store = storeOver(collection);
    expect(await store.release(KEY, TOKEN)).toBe(true);
    expect(await store.release(KEY, TOKEN)).toBe(false);
    expect(collection.callsOf("deleteOne")[0]).toEqual([OWNED, { writeConcern: MAJORITY, maxTimeMS: 2_000 }]);
  });
});

describe("get and delete", () => {
  const GET_PIPELINE = [
    { $match: { _id: { $eq: KEY }, $expr: LIVE } },
    { $limit: 1 },
    {
      $project: {
        _id: 0,
        state: 1,
        fingerprint: 1,
        owner: 1,
        response: 1,
        leaseRemainingMs: { $max: [0, { $toDouble: { $subtract: ["$leaseUntil", "$$NOW"] } }] },
        ttlRemainingMs: { $max: [0, { $toDouble: { $subtract: ["$expiresAt", "$$NOW"] } }] },
      },
    },
  ];

  it("get reads the live record on the primary, with remaining times from the server's clock", async () => {
    const collection = new RecordedCollection().script(
      "aggregate",
      {
        value: [
          {
            state: "in-flight",
            fingerprint: FINGERPRINT,
            owner: TOKEN,
            leaseRemainingMs: 29_000,
            ttlRemainingMs: 86_399_000,
          },
        ],
      },
      {
        value: [
          {
            state: "completed",
            fingerprint: FINGERPRINT,
            response: new Binary(new Uint8Array([7])),
            leaseRemainingMs: 0,
            ttlRemainingMs: 500,
          },
        ],
      },
      { value: [] },
    );
    const store = storeOver(collection);
    expect(await store.get(KEY)).toEqual({
      state: "in-flight",
      fingerprint: FINGERPRINT,
      token: TOKEN,
      leaseRemainingMs: 29_000,
      ttlRemainingMs: 86_399_000,
    });
    expect(await store.get(KEY)).toEqual({
      state: "completed",
      fingerprint: FINGERPRINT,
      response: new Uint8Array([7]),
      ttlRemainingMs: 500,
    });
    expect(await store.get(KEY)).toBeNull();
    expect(collection.callsOf("aggregate")[0]).toEqual([
      GET_PIPELINE,
      { readPreference: "primary", maxTimeMS: 2_000 },
    ]);
  });

  it("delete removes the record whatever its state and reports true only for a live one", async () => {
    const collection = new RecordedCollection().script(
      "findOneAndDelete",
      { value: { live: true } },
      { value: { live: false } },
      { value: null },
    );
    const store = storeOver(collection);
    expect(await store.delete(KEY)).toBe(true);
    expect(await store.delete(KEY)).toBe(false);
    expect(await store.delete(KEY)).toBe(false);
    expect(collection.callsOf("findOneAndDelete")[0]).toEqual([
      { _id: { $eq: KEY } },
      {
        projection: { _id: 0, live: LIVE },
        includeResultMetadata: false,
        writeConcern: MAJORITY,
        maxTimeMS: 2_000,
      },
    ]);
  });
});

describe("ensureIndexes", () => {
  it("creates the TTL index on expiresAt with expireAfterSeconds 0", async () => {
    const collection = new RecordedCollection().script("createIndex", {
      value: "idempotency_expires_at_ttl",
    });
    await storeOver(collection).ensureIndexes();
    expect(collection.calls).toEqual([
      {
        method: "createIndex",
        args: [
          { expiresAt: 1 },
          {
            name: "idempotency_expires_at_ttl",
            expireAfterSeconds: 0,
            writeConcern: MAJORITY,
            maxTimeMS: 2_000,
          },
        ],
      },
    ]);
  });

  it("maps a failure to IdempotencyStoreError", async () => {
    const cause = Object.assign(new Error("Index already exists with a different name"), { code: 85 });
    const collection = new RecordedCollection().script("createIndex", { error: cause });
    await expect(storeOver(collection).ensureIndexes()).rejects.toMatchObject({
      code: "ERR_IDEMPOTENCY_STORE",
      message: "MongoStore ensureIndexes failed: Index already exists with a different name (code 85)",
      cause,
    });
  });
});
