import {
  type BeginArgs,
  type BeginResult,
  type IdempotencyStore,
  IdempotencyStoreError,
  type StoreCallOptions,
  type StoredRecord,
} from "@idempotency/core";
import { Binary } from "mongodb";
import {
  type MongoStoreOptions,
  type MongoStoreWriteConcern,
  type RecordCollection,
  resolveMongoStoreOptions,
} from "./options.js";
import {
  beginCommand,
  completeUpdate,
  deleteCommand,
  extendUpdate,
  getPipeline,
  ownedFilter,
  TTL_INDEX,
} from "./pipeline.js";

/** MongoDB's largest document (BSON `maxBsonObjectSize`), 16 MiB. */
export const MONGODB_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;
/** Room left in a completed record for its other fields (`_id`, fingerprint, state, expiry). */
const RECORD_OVERHEAD_BYTES = 16 * 1024;
/** How many times `begin` is sent again after a duplicate-key error (E11000) before it gives up. */
export const DUPLICATE_KEY_RETRIES = 3;
const DUPLICATE_KEY = 11000;
const MAX_TIME_MS_EXPIRED = 50;

/**
 * Thrown by `MongoStore.complete` when a response cannot fit in one MongoDB document (16 MiB with the
 * record's other fields); nothing is sent. It is an `IdempotencyStoreError`, as the store contract requires.
 * Keep the engine's `maxResponseBytes` (default 1 MiB) below `limitBytes`: larger responses are then
 * completed without a body instead.
 *
 * @example
 * ```ts
 * import { MongoResponseTooLargeError } from "@idempotency/mongodb";
 *
 * try {
 *   await store.complete(key, token, hugeResponse, 86_400_000);
 * } catch (error) {
 *   if (error instanceof MongoResponseTooLargeError) console.error(error.responseBytes, error.limitBytes);
 * }
 * ```
 */
export class MongoResponseTooLargeError extends IdempotencyStoreError {
  /** The size of the response that was refused, in bytes. */
  readonly responseBytes: number;
  /** The largest response the store accepts, in bytes. */
  readonly limitBytes: number;

  constructor(responseBytes: number, limitBytes: number) {
    super(
      `MongoStore complete failed: the response is ${responseBytes} bytes, and a MongoDB document holds at most ` +
        `${MONGODB_MAX_DOCUMENT_BYTES} bytes (16 MiB), so the store accepts responses up to ${limitBytes} bytes. ` +
        "Set the engine's maxResponseBytes below that (larger responses are then completed without a body).",
    );
    this.responseBytes = responseBytes;
    this.limitBytes = limitBytes;
  }
}

/**
 * The largest response `MongoStore.complete` accepts, in bytes: 16 MiB less room for the record's other
 * fields. Larger ones fail with {@link MongoResponseTooLargeError} before anything is sent.
 *
 * @example
 * ```ts
 * import { MAX_RESPONSE_BYTES } from "@idempotency/mongodb";
 *
 * const idempotency = createIdempotency({ store, scope: "global", maxResponseBytes: Math.min(8 << 20, MAX_RESPONSE_BYTES) });
 * ```
 */
export const MAX_RESPONSE_BYTES = MONGODB_MAX_DOCUMENT_BYTES - RECORD_OVERHEAD_BYTES;

/** What `begin`'s projection returns. */
interface BeginReply {
  state?: unknown;
  fingerprint?: unknown;
  owner?: unknown;
  response?: unknown;
  takeover?: unknown;
  leaseRemainingMs?: unknown;
}

/** What `get`'s pipeline returns. */
interface GetReply extends BeginReply {
  ttlRemainingMs?: unknown;
}

/**
 * An `IdempotencyStore` on MongoDB (replica set, sharded cluster or standalone) through a driver
 * `Collection` you pass in (mongodb 6 or 7).
 *
 * `begin` is ONE `findOneAndUpdate` on `{ _id }` (the core's hashed identity) with `upsert` and an update
 * pipeline whose `$cond` writes a fresh claim only when the record is absent, expired, or (with
 * `allowTakeover`) in flight with an expired lease, and otherwise leaves it untouched; the owner token of the
 * document it returns tells who won, so a live record costs one round trip and never a duplicate-key error.
 * Two simultaneous first upserts can still collide on `_id` (E11000): that `begin` is sent again, at most
 * {@link DUPLICATE_KEY_RETRIES} times, and then finds the winner's record. `complete`, `extend` and `release`
 * are filtered on the owner token and report whether they matched. Every lease and expiry is computed and
 * compared on the server's clock (`$$NOW`) and stored as a BSON Date, so application servers with skewed
 * clocks agree; expiry is checked by every operation, and the TTL index of {@link MongoStore.ensureIndexes}
 * only collects garbage. Writes use write concern `majority` unless told otherwise. Needs MongoDB 4.4 or
 * later; tested on 6.0+ (see the README).
 *
 * @example
 * ```ts
 * import { createIdempotency } from "@idempotency/core";
 * import { MongoStore } from "@idempotency/mongodb";
 * import { MongoClient } from "mongodb";
 *
 * const client = new MongoClient(process.env.MONGODB_URL ?? "mongodb://127.0.0.1:27017/?replicaSet=rs0");
 * const store = new MongoStore({ collection: client.db("app").collection("idempotency_records") });
 * await store.ensureIndexes(); // once, at startup: the TTL index that deletes expired records
 * const idempotency = createIdempotency({ store, scope: "global" });
 * ```
 */
export class MongoStore implements IdempotencyStore {
  readonly #collection: RecordCollection;
  readonly #writeConcern: MongoStoreWriteConcern;
  readonly #timeoutMs: number;
  #closed = false;

  constructor(options: MongoStoreOptions) {
    const resolved = resolveMongoStoreOptions(options);
    this.#collection = resolved.collection;
    this.#writeConcern = resolved.writeConcern;
    this.#timeoutMs = resolved.timeoutMs;
  }

  /**
   * Creates the TTL index on `expiresAt` (`expireAfterSeconds: 0`), so MongoDB deletes expired records in
   * the background (its TTL monitor runs about once a minute). Garbage collection only: every operation
   * checks expiry itself. Idempotent; call it once at startup or from a migration.
   *
   * @example
   * ```ts
   * const store = new MongoStore({ collection });
   * await store.ensureIndexes();
   * ```
   */
  async ensureIndexes(call?: StoreCallOptions): Promise<void> {
    await this.#call("ensureIndexes", call, (maxTimeMS) =>
      this.#collection.createIndex(TTL_INDEX.spec, {
        ...TTL_INDEX.options,
        writeConcern: this.#writeConcern,
        maxTimeMS,
      }),
    );
  }

  async begin(key: string, args: BeginArgs, call?: StoreCallOptions): Promise<BeginResult> {
    const command = beginCommand(
      key,
      args.token,
      args.fingerprint,
      args.leaseMs,
      args.ttlMs,
      args.allowTakeover,
    );
    const reply = await this.#call("begin", call, async (maxTimeMS) => {
      const options = {
        upsert: true,
        returnDocument: "after",
        projection: command.projection,
        includeResultMetadata: false,
        writeConcern: this.#writeConcern,
        maxTimeMS,
      };
      for (let retry = 0; ; retry++) {
        try {
          return await this.#collection.findOneAndUpdate(command.filter, command.update, options);
        } catch (error) {
          if (!isDuplicateKey(error)) throw error;
          if (retry >= DUPLICATE_KEY_RETRIES) {
            throw new IdempotencyStoreError(
              `MongoStore begin failed: ${DUPLICATE_KEY_RETRIES + 1} attempts in a row hit a duplicate-key ` +
                "error (E11000). Two first claims collide at most once; is another unique index defined on " +
                "this collection?",
              { cause: error },
            );
          }
          // Another upsert inserted the record first: the next attempt finds it and reports the winner.
        }
      }
    });
    return beginResult(reply as BeginReply | null, args.token);
  }

  async complete(
    key: string,
    token: string,
    response: Uint8Array | null,
    ttlMs: number,
    call?: StoreCallOptions,
  ): Promise<boolean> {
    if (this.#closed) throw closedError("complete");
    if (response !== null && response.byteLength > MAX_RESPONSE_BYTES) {
      throw new MongoResponseTooLargeError(response.byteLength, MAX_RESPONSE_BYTES);
    }
    const body = response === null ? null : new Binary(response);
    const result = await this.#call("complete", call, (maxTimeMS) =>
      this.#collection.updateOne(ownedFilter(key, token), completeUpdate(body, ttlMs), {
        writeConcern: this.#writeConcern,
        maxTimeMS,
      }),
    );
    return result.matchedCount === 1;
  }

  async extend(key: string, token: string, leaseMs: number, call?: StoreCallOptions): Promise<boolean> {
    const result = await this.#call("extend", call, (maxTimeMS) =>
      this.#collection.updateOne(ownedFilter(key, token), extendUpdate(leaseMs), {
        writeConcern: this.#writeConcern,
        maxTimeMS,
      }),
    );
    return result.matchedCount === 1;
  }

  async release(key: string, token: string, call?: StoreCallOptions): Promise<boolean> {
    const result = await this.#call("release", call, (maxTimeMS) =>
      this.#collection.deleteOne(ownedFilter(key, token), { writeConcern: this.#writeConcern, maxTimeMS }),
    );
    return result.deletedCount === 1;
  }

  async get(key: string, call?: StoreCallOptions): Promise<StoredRecord | null> {
    const replies = await this.#call("get", call, (maxTimeMS) =>
      // The primary: a secondary may not have the latest claim yet.
      this.#collection.aggregate(getPipeline(key), { readPreference: "primary", maxTimeMS }).toArray(),
    );
    const reply = replies[0] as GetReply | undefined;
    if (reply === undefined) return null;
    if (reply.state === "in-flight") {
      return {
        state: "in-flight",
        fingerprint: text("get", reply.fingerprint),
        token: text("get", reply.owner),
        leaseRemainingMs: milliseconds("get", reply.leaseRemainingMs),
        ttlRemainingMs: milliseconds("get", reply.ttlRemainingMs),
      };
    }
    if (reply.state === "completed") {
      return {
        state: "completed",
        fingerprint: text("get", reply.fingerprint),
        response: bytes("get", reply.response),
        ttlRemainingMs: milliseconds("get", reply.ttlRemainingMs),
      };
    }
    throw malformed("get", reply);
  }

  async delete(key: string, call?: StoreCallOptions): Promise<boolean> {
    const command = deleteCommand(key);
    const deleted = await this.#call("delete", call, (maxTimeMS) =>
      this.#collection.findOneAndDelete(command.filter, {
        projection: command.projection,
        includeResultMetadata: false,
        writeConcern: this.#writeConcern,
        maxTimeMS,
      }),
    );
    return (deleted as { live?: unknown } | null)?.live === true;
  }

  /**
   * Marks this store closed: later calls fail with `IdempotencyStoreError`. The client is yours and stays
   * open; close it yourself (`client.close()`).
   */
  async close(): Promise<void> {
    this.#closed = true;
  }

  /**
   * Runs `operation` within the caller's deadline (the engine's `storeTimeoutMs`, else `timeoutMs`): sent to
   * the server as `maxTimeMS` and enforced here too, and maps every failure to `IdempotencyStoreError`.
   */
  async #call<T>(
    name: string,
    call: StoreCallOptions | undefined,
    operation: (maxTimeMS: number) => Promise<T>,
  ): Promise<T> {
    if (this.#closed) throw closedError(name);
    const timeoutMs = deadlineOf(call, this.#timeoutMs);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new IdempotencyStoreError(
            `MongoStore ${name} failed: MongoDB did not answer within ${timeoutMs} ms. The server stops the ` +
              "operation at the same deadline (maxTimeMS); one still queued in the driver may apply later.",
          ),
        );
      }, timeoutMs);
    });
    let running: Promise<T> | undefined;
    try {
      running = operation(timeoutMs);
      return await Promise.race([running, timeout]);
    } catch (error) {
      throw storeError(name, error, timeoutMs);
    } finally {
      clearTimeout(timer);
      // The operation may still settle after a timeout; its outcome is no longer anyone's news.
      running?.catch(() => undefined);
    }
  }
}

function beginResult(reply: BeginReply | null, token: string): BeginResult {
  if (reply === null || typeof reply !== "object") throw malformed("begin", reply);
  if (reply.state === "in-flight") {
    if (reply.owner === token) return { state: "claimed", takeover: reply.takeover === true };
    return {
      state: "in-flight",
      fingerprint: text("begin", reply.fingerprint),
      leaseRemainingMs: milliseconds("begin", reply.leaseRemainingMs),
    };
  }
  if (reply.state === "completed") {
    return {
      state: "completed",
      fingerprint: text("begin", reply.fingerprint),
      response: bytes("begin", reply.response),
    };
  }
  throw malformed("begin", reply);
}

/** The caller's deadline for one call: the engine passes its `storeTimeoutMs`; direct callers get the default. */
function deadlineOf(call: StoreCallOptions | undefined, fallbackMs: number): number {
  const timeoutMs = call?.timeoutMs;
  return typeof timeoutMs === "number" && Number.isFinite(timeoutMs) && timeoutMs > 0
    ? Math.ceil(timeoutMs)
    : fallbackMs;
}

function codeOf(error: unknown): unknown {
  return typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;
}

function isDuplicateKey(error: unknown): boolean {
  return codeOf(error) === DUPLICATE_KEY;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function closedError(operation: string): IdempotencyStoreError {
  return new IdempotencyStoreError(`MongoStore ${operation} failed: the store was closed.`);
}

/** Every failure becomes an `IdempotencyStoreError` naming the operation, with the driver's error as `cause`. */
function storeError(operation: string, error: unknown, timeoutMs: number): IdempotencyStoreError {
  if (error instanceof IdempotencyStoreError) return error;
  if (codeOf(error) === MAX_TIME_MS_EXPIRED) {
    return new IdempotencyStoreError(
      `MongoStore ${operation} failed: the server stopped it at the caller's deadline (maxTimeMS ${timeoutMs}).`,
      { cause: error },
    );
  }
  const code = codeOf(error);
  const suffix = code === undefined ? "" : ` (code ${String(code)})`;
  return new IdempotencyStoreError(`MongoStore ${operation} failed: ${messageOf(error)}${suffix}`, {
    cause: error,
  });
}

function malformed(operation: string, reply: unknown): IdempotencyStoreError {
  let shown: string;
  try {
    shown = JSON.stringify(reply)?.slice(0, 200) ?? String(reply);
  } catch {
    shown = String(reply);
  }
  return new IdempotencyStoreError(
    `MongoStore ${operation} failed: unexpected record in MongoDB (${shown}); ` +
      "is another program writing to this store's collection?",
  );
}

function text(operation: string, value: unknown): string {
  if (typeof value === "string") return value;
  throw malformed(operation, value);
}

/** A duration the server computed as a double (`$toDouble`); other numeric BSON types are accepted too. */
function milliseconds(operation: string, value: unknown): number {
  if (typeof value === "number" && Number.isFinite(value)) return Math.max(0, Math.round(value));
  if (typeof value === "bigint") return Math.max(0, Number(value));
  throw malformed(operation, value);
}

/**
 * A copy of a stored response in a fresh `Uint8Array`: BSON Binary by default, a Buffer when the client
 * has `promoteBuffers`; `null` when completed without a body.
 */
function bytes(operation: string, value: unknown): Uint8Array | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (isBinary(value)) return new Uint8Array(value.buffer.subarray(0, value.position));
  throw malformed(operation, value);
}

/** Duck-typed, so a Binary from another copy of `bson` (mongodb 6 next to 7) is recognised too. */
function isBinary(value: unknown): value is { buffer: Uint8Array; position: number } {
  const candidate = value as { _bsontype?: unknown; buffer?: unknown; position?: unknown };
  return (
    typeof value === "object" &&
    candidate._bsontype === "Binary" &&
    candidate.buffer instanceof Uint8Array &&
    typeof candidate.position === "number"
  );
}
