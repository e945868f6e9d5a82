import { checkOptionNames, IdempotencyOptionsError } from "@idempotency/core";
import type { Binary, Collection, Document } from "mongodb";

/**
 * The shape of one record in the store's collection, for typing `db.collection<MongoStoreDocument>(name)`.
 * Times are BSON Dates on the server's clock (a TTL index ignores numbers, and numbers sort before Dates).
 *
 * @example
 * ```ts
 * import type { MongoStoreDocument } from "@idempotency/mongodb";
 *
 * const collection = client.db("app").collection<MongoStoreDocument>("idempotency_records");
 * const stuck = await collection.find({ state: "in-flight", leaseUntil: { $lt: new Date() } }).toArray();
 * ```
 */
export interface MongoStoreDocument {
  /** The core's hashed identity: SHA-256 of (scope, method, path, key), 64 hex characters. */
  _id: string;
  state: "in-flight" | "completed";
  /** The request fingerprint, e.g. `"xxh3-128:…"`. */
  fingerprint: string;
  /** The owner token while in flight; absent once completed. */
  owner?: string;
  /** When the lease ends (server clock); absent once completed. */
  leaseUntil?: Date;
  /** When the record counts as absent (server clock). The TTL index of `ensureIndexes()` deletes it later. */
  expiresAt: Date;
  /** The core's encoded response; `null` when completed without a body; absent while in flight. */
  response?: Binary | null;
  /** Whether this claim replaced an in-flight record whose lease had expired; absent once completed. */
  takeover?: boolean;
}

/**
 * The write concern of every write the store sends. `w: 0` is refused: an unacknowledged write cannot tell
 * who won a claim.
 *
 * @example
 * ```ts
 * const writeConcern: MongoStoreWriteConcern = { w: "majority", journal: true, wtimeoutMS: 2_000 };
 * ```
 */
export interface MongoStoreWriteConcern {
  /** `"majority"` (default), a number of members (at least 1), or a tag set name. */
  w?: number | "majority" | string;
  /** Wait for the journal on the acknowledging members. */
  journal?: boolean;
  /** How long the server waits for the write concern before answering with an error, in ms. */
  wtimeoutMS?: number;
}

/**
 * Options of {@link MongoStore}.
 *
 * @example
 * ```ts
 * import { MongoClient } from "mongodb";
 *
 * const client = new MongoClient(process.env.MONGODB_URL ?? "mongodb://127.0.0.1:27017/?replicaSet=rs0");
 * const options: MongoStoreOptions = {
 *   collection: client.db("app").collection("idempotency_records"),
 *   writeConcern: { w: "majority", wtimeoutMS: 2_000 },
 * };
 * ```
 */
export interface MongoStoreOptions {
  /**
   * A driver `Collection` you own, e.g. `client.db("app").collection("idempotency_records")`. The store
   * never connects, closes or reconfigures its client. Give the store a collection of its own.
   */
  collection: Collection<MongoStoreDocument> | Collection<Document>;
  /**
   * The write concern of every write. Default `{ w: "majority" }`: a claim acknowledged by one member only
   * can be rolled back by a failover, and a rolled-back claim means a second execution. On a standalone
   * server (no replication) pass `{ w: 1 }`.
   */
  writeConcern?: MongoStoreWriteConcern;
  /**
   * How long one store call may take, in ms, when the caller does not say. The engine always says: it passes
   * its own `storeTimeoutMs` with every call. The deadline is sent as `maxTimeMS` and also enforced on this
   * side (a call not answered by then fails with `IdempotencyStoreError`). Default `2_000`.
   */
  timeoutMs?: number;
}

/** The options with defaults applied. */
export interface ResolvedMongoStoreOptions {
  collection: RecordCollection;
  writeConcern: MongoStoreWriteConcern;
  timeoutMs: number;
}

/**
 * The part of a driver `Collection` the store uses. Its own type, so that the unit tests' recorded-call
 * double states exactly what the store relies on.
 */
export interface RecordCollection {
  findOneAndUpdate(filter: object, update: object[], options: object): Promise<unknown>;
  updateOne(filter: object, update: object[], options: object): Promise<{ matchedCount?: number }>;
  deleteOne(filter: object, options: object): Promise<{ deletedCount?: number }>;
  findOneAndDelete(filter: object, options: object): Promise<unknown>;
  aggregate(pipeline: object[], options: object): { toArray(): Promise<unknown[]> };
  createIndex(spec: object, options: object): Promise<string>;
}

const KNOWN_OPTIONS = ["collection", "writeConcern", "timeoutMs"];
const KNOWN_WRITE_CONCERN = new Set(["w", "journal", "wtimeoutMS"]);
const COLLECTION_METHODS = [
  "findOneAndUpdate",
  "updateOne",
  "deleteOne",
  "findOneAndDelete",
  "aggregate",
  "createIndex",
] as const;
export const DEFAULT_TIMEOUT_MS = 2_000;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "object") return `an object with keys ${Object.keys(value).join(", ") || "(none)"}`;
  return String(value);
}

function resolveWriteConcern(value: unknown): MongoStoreWriteConcern {
  if (value === undefined) return { w: "majority" };
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new IdempotencyOptionsError(
      "writeConcern",
      `expected an object such as { w: "majority" } or { w: 1 }, got ${describe(value)}.`,
    );
  }
  for (const name of Object.keys(value)) {
    if (!KNOWN_WRITE_CONCERN.has(name)) {
      throw new IdempotencyOptionsError(
        "writeConcern",
        `unknown field "${name}". Known fields: w, journal, wtimeoutMS.`,
      );
    }
  }
  const { w = "majority", journal, wtimeoutMS } = value as MongoStoreWriteConcern;
  if (w === 0) {
    throw new IdempotencyOptionsError(
      "writeConcern",
      'w: 0 (unacknowledged) cannot tell which request won a claim; use { w: "majority" } or { w: 1 }.',
    );
  }
  const validW =
    (typeof w === "number" && Number.isSafeInteger(w) && w >= 1) || (typeof w === "string" && w.length > 0);
  if (!validW) {
    throw new IdempotencyOptionsError(
      "writeConcern",
      `w must be "majority", a whole number of members (at least 1) or a tag set name, got ${describe(w)}.`,
    );
  }
  if (journal !== undefined && typeof journal !== "boolean") {
    throw new IdempotencyOptionsError(
      "writeConcern",
      `journal must be true or false, got ${describe(journal)}.`,
    );
  }
  if (
    wtimeoutMS !== undefined &&
    (typeof wtimeoutMS !== "number" || !Number.isSafeInteger(wtimeoutMS) || wtimeoutMS <= 0)
  ) {
    throw new IdempotencyOptionsError(
      "writeConcern",
      `wtimeoutMS must be a positive whole number of milliseconds, got ${describe(wtimeoutMS)}.`,
    );
  }
  const resolved: MongoStoreWriteConcern = { w };
  if (journal !== undefined) resolved.journal = journal;
  if (wtimeoutMS !== undefined) resolved.wtimeoutMS = wtimeoutMS;
  return Object.freeze(resolved);
}

/** Validates the options of `MongoStore`, throwing `IdempotencyOptionsError` naming the first bad one. */
export function resolveMongoStoreOptions(options: MongoStoreOptions): ResolvedMongoStoreOptions {
  checkOptionNames(
    options,
    KNOWN_OPTIONS,
    'an object such as `{ collection: client.db("app").collection("idempotency_records") }`',
  );
  const collection = options.collection as unknown;
  const missing =
    typeof collection === "object" && collection !== null
      ? COLLECTION_METHODS.filter(
          (method) => typeof (collection as Record<string, unknown>)[method] !== "function",
        )
      : COLLECTION_METHODS;
  if (missing.length > 0) {
    throw new IdempotencyOptionsError(
      "collection",
      "required: a MongoDB driver Collection (mongodb 6 or 7), e.g. " +
        '`new MongoStore({ collection: client.db("app").collection("idempotency_records") })`; ' +
        (typeof collection === "object" && collection !== null
          ? `the object given has no ${missing.join(", ")}.`
          : `got ${describe(collection)}.`),
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    throw new IdempotencyOptionsError(
      "timeoutMs",
      `expected a positive whole number of milliseconds, got ${describe(timeoutMs)}.`,
    );
  }
  return {
    collection: collection as RecordCollection,
    writeConcern: resolveWriteConcern(options.writeConcern),
    timeoutMs,
  };
}
