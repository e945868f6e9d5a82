import {
  type BeginArgs,
  type BeginResult,
  checkOptionNames,
  IdempotencyOptionsError,
  type IdempotencyStore,
  IdempotencyStoreError,
  type StoreCallOptions,
  type StoredRecord,
  wholeNumberOption,
} from "@idempotency/core";
import type { Cluster, Redis } from "ioredis";
import { type Script, scripts } from "./scripts.js";
import { ServerClock } from "./server-clock.js";

/**
 * Options of {@link RedisStore}.
 *
 * @example
 * ```ts
 * const options: RedisStoreOptions = { client: new Redis(process.env.REDIS_URL), prefix: "orders:idem:" };
 * ```
 */
export interface RedisStoreOptions {
  /**
   * An ioredis `Redis` or `Cluster` client. You own it: the store never connects, closes or reconfigures it.
   * See the README for the client settings the store relies on.
   */
  client: Redis | Cluster;
  /** Prepended to every record key. Default `"idempotency:"`. */
  prefix?: string;
  /**
   * How long one store call may take, in ms, when the caller does not say. The engine always says: it passes
   * its own `storeTimeoutMs` with every call, and that deadline is the one enforced. A call that has not
   * answered by its deadline fails with `IdempotencyStoreError`, and if the command reaches Redis later (it
   * sat in ioredis' offline queue, or the server was paused) the script refuses to apply it. Default `2_000`.
   */
  timeoutMs?: number;
}

/**
 * What the store needs of an ioredis client; both `Redis` and `Cluster` have it. The named `…Buffer` commands,
 * not `callBuffer`: with `enableAutoPipelining`, ioredis 6 sends `callBuffer(command, …)` without its command
 * name.
 */
interface BufferCommands {
  evalshaBuffer(sha: string, keys: number, ...args: Array<string | Buffer>): Promise<unknown>;
  evalBuffer(script: string, keys: number, ...args: Array<string | Buffer>): Promise<unknown>;
  timeBuffer(): Promise<unknown>;
}

/** What the scripts return after the server time: bulk strings as Buffers, integers as numbers, nil as null. */
type Reply = Array<Buffer | number | null>;

const DEFAULT_PREFIX = "idempotency:";
const DEFAULT_TIMEOUT_MS = 2_000;
const KNOWN_OPTIONS = ["client", "prefix", "timeoutMs"];

/**
 * An `IdempotencyStore` on Redis (single node, Sentinel or Cluster) through an ioredis client you pass in.
 *
 * Every operation is one Lua script run by SHA (`EVALSHA`), so `begin` claims, takes over an expired lease
 * or returns the existing record atomically in ONE round trip, and `complete`, `extend` and `release` check
 * the owner token inside the script. Scripts are loaded lazily: after `NOSCRIPT` (first use, `SCRIPT FLUSH`,
 * a failover to a fresh node) the same call is sent once more as `EVAL`, which also caches it again. Leases
 * and TTLs are compared on the server's clock (`TIME`), so application servers with skewed clocks agree.
 * Each record is one hash under one key with a native `PEXPIRE` TTL, so every script touches one hash slot
 * and Redis Cluster works unchanged.
 *
 * Every call has a deadline (the engine's `storeTimeoutMs`, which it passes with each call; `timeoutMs` for
 * calls without one): it fails with `IdempotencyStoreError` when Redis has not answered by then, and a command that reaches Redis after its deadline is refused by the script instead of
 * applying unnoticed. The first call of an instance costs one extra round trip (`TIME`) to learn the
 * server clock that deadlines are expressed in.
 *
 * @example
 * ```ts
 * import { createIdempotency } from "@idempotency/core";
 * import { RedisStore } from "@idempotency/redis";
 * import { Redis } from "ioredis";
 *
 * const client = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: 1 });
 * const idempotency = createIdempotency({ store: new RedisStore({ client }), scope: "global" });
 * ```
 */
export class RedisStore implements IdempotencyStore {
  readonly #client: BufferCommands;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #clock = new ServerClock();
  #closed = false;

  constructor(options: RedisStoreOptions) {
    checkOptionNames(options, KNOWN_OPTIONS, "an object such as `{ client: new Redis(url) }`");
    const client = options.client as unknown;
    if (
      typeof client !== "object" ||
      client === null ||
      typeof (client as BufferCommands).evalshaBuffer !== "function"
    ) {
      throw new IdempotencyOptionsError(
        "client",
        "required: an ioredis `Redis` or `Cluster` instance, e.g. `new RedisStore({ client: new Redis(url) })`.",
      );
    }
    const prefix = options.prefix ?? DEFAULT_PREFIX;
    if (typeof prefix !== "string") {
      throw new IdempotencyOptionsError(
        "prefix",
        `expected a string such as "idempotency:", got ${typeof prefix}.`,
      );
    }
    const timeoutMs = wholeNumberOption("timeoutMs", options.timeoutMs, {
      min: 1,
      unit: "milliseconds",
      fallback: DEFAULT_TIMEOUT_MS,
    });
    this.#client = client as BufferCommands;
    this.#prefix = prefix;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * The Redis key holding the record of `key` (an identity as the engine passes it), for inspection.
   *
   * @example
   * ```ts
   * const redisKey = store.keyOf(event.key); // from an onEvent event
   * console.log(await client.hgetall(redisKey)); // { state: "completed", fingerprint: "xxh3-128:…", … }
   * ```
   */
  keyOf(key: string): string {
    return this.#prefix + key;
  }

  async begin(key: string, args: BeginArgs, call?: StoreCallOptions): Promise<BeginResult> {
    const reply = await this.#call(call, scripts.begin, key, [
      args.token,
      args.fingerprint,
      String(args.leaseMs),
      String(args.ttlMs),
      args.allowTakeover ? "1" : "0",
    ]);
    const state = text(reply[1]);
    if (state === "claimed") return { state: "claimed", takeover: reply[2] === 1 };
    if (state === "in-flight") {
      return { state: "in-flight", fingerprint: text(reply[2]), leaseRemainingMs: count(reply[3]) };
    }
    if (state === "completed") {
      return { state: "completed", fingerprint: text(reply[2]), response: bytes(reply[3]) };
    }
    throw malformed("begin", reply);
  }

  async complete(
    key: string,
    token: string,
    response: Uint8Array | null,
    ttlMs: number,
    call?: StoreCallOptions,
  ): Promise<boolean> {
    const body =
      response === null ? "" : Buffer.from(response.buffer, response.byteOffset, response.byteLength);
    const reply = await this.#call(call, scripts.complete, key, [
      token,
      response === null ? "0" : "1",
      body,
      String(ttlMs),
    ]);
    return reply[1] === 1;
  }

  async extend(key: string, token: string, leaseMs: number, call?: StoreCallOptions): Promise<boolean> {
    const reply = await this.#call(call, scripts.extend, key, [token, String(leaseMs)]);
    return reply[1] === 1;
  }

  async release(key: string, token: string, call?: StoreCallOptions): Promise<boolean> {
    const reply = await this.#call(call, scripts.release, key, [token]);
    return reply[1] === 1;
  }

  async get(key: string, call?: StoreCallOptions): Promise<StoredRecord | null> {
    const reply = await this.#call(call, scripts.get, key, []);
    if (reply.length === 1) return null;
    const state = text(reply[1]);
    if (state === "in-flight") {
      return {
        state: "in-flight",
        fingerprint: text(reply[2]),
        token: text(reply[3]),
        leaseRemainingMs: count(reply[4]),
        ttlRemainingMs: count(reply[6]),
      };
    }
    if (state === "completed") {
      return {
        state: "completed",
        fingerprint: text(reply[2]),
        response: bytes(reply[5]),
        ttlRemainingMs: count(reply[6]),
      };
    }
    throw malformed("get", reply);
  }

  async delete(key: string, call?: StoreCallOptions): Promise<boolean> {
    const reply = await this.#call(call, scripts.delete, key, []);
    return reply[1] === 1;
  }

  /**
   * Marks this store closed: later calls fail with `IdempotencyStoreError`. The client is yours and stays
   * open; close it yourself (`client.quit()`).
   */
  async close(): Promise<void> {
    this.#closed = true;
  }

  /**
   * Runs `script` on `key` within the caller's deadline (the engine's `storeTimeoutMs`, else `timeoutMs`),
   * mapping every failure to `IdempotencyStoreError`.
   */
  async #call(
    call: StoreCallOptions | undefined,
    script: Script,
    key: string,
    args: Array<string | Buffer>,
  ): Promise<Reply> {
    if (this.#closed) {
      throw new IdempotencyStoreError(`RedisStore ${script.name} failed: the store was closed.`);
    }
    const timeoutMs = deadlineOf(call, this.#timeoutMs);
    const startedAt = this.#clock.localNow();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        // One turn later, after the poll phase: a timer that fires late (a busy event loop) must not report a
        // timeout for a reply that is already in the socket, from a command Redis applied within its deadline.
        setImmediate(() =>
          reject(
            new IdempotencyStoreError(
              `RedisStore ${script.name} failed: Redis did not answer within ${timeoutMs} ms; ` +
                "the command will not apply if it reaches Redis later.",
            ),
          ),
        );
      }, timeoutMs);
    });
    const evaluation = this.#evaluate(script, key, args, startedAt, timeoutMs);
    try {
      return await Promise.race([evaluation, timeout]);
    } catch (error) {
      throw storeError(script.name, error);
    } finally {
      clearTimeout(timer);
      // The evaluation may still settle after a timeout; its outcome is no longer anyone's news.
      evaluation.catch(() => undefined);
    }
  }

  async #evaluate(
    script: Script,
    key: string,
    args: Array<string | Buffer>,
    startedAt: number,
    timeoutMs: number,
  ): Promise<Reply> {
    if (!this.#clock.known) await this.#learnServerClock();
    const argv = [String(this.#clock.deadline(startedAt, timeoutMs)), ...args];
    const redisKey = this.#prefix + key;
    let reply: unknown;
    try {
      try {
        reply = await this.#client.evalshaBuffer(script.sha, 1, redisKey, ...argv);
      } catch (error) {
        if (!messageOf(error).startsWith("NOSCRIPT")) throw error;
        // Not in this node's script cache (first use, SCRIPT FLUSH, failover): EVAL runs and caches it.
        reply = await this.#client.evalBuffer(script.source, 1, redisKey, ...argv);
      }
    } catch (error) {
      const late = messageOf(error).match(/IDEMPOTENCY_LATE (\d+)/);
      if (late) {
        this.#clock.observe(Number(late[1]));
        throw new IdempotencyStoreError(
          `RedisStore ${script.name} failed: the command reached Redis after its deadline (${timeoutMs} ms ` +
            "after the call) and was not applied.",
          { cause: error },
        );
      }
      throw error;
    }
    if (!Array.isArray(reply) || typeof reply[0] !== "number") throw malformed(script.name, reply);
    this.#clock.observe(reply[0]);
    return reply as Reply;
  }

  async #learnServerClock(): Promise<void> {
    const reply = await this.#client.timeBuffer();
    if (!Array.isArray(reply) || reply.length !== 2) throw malformed("time", reply);
    const [seconds, micros] = reply.map((part) => Number(String(part)));
    this.#clock.observe((seconds as number) * 1000 + Math.floor((micros as number) / 1000));
  }
}

/** The caller's deadline for one call: the engine passes its `storeTimeoutMs`; direct callers get the default. */
function deadlineOf(call: StoreCallOptions | undefined, fallbackMs: number): number {
  const timeoutMs = call?.timeoutMs;
  return typeof timeoutMs === "number" && Number.isFinite(timeoutMs) && timeoutMs > 0
    ? timeoutMs
    : fallbackMs;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function storeError(operation: string, error: unknown): IdempotencyStoreError {
  if (error instanceof IdempotencyStoreError) return error;
  return new IdempotencyStoreError(`RedisStore ${operation} failed: ${messageOf(error)}`, { cause: error });
}

function malformed(operation: string, reply: unknown): IdempotencyStoreError {
  return new IdempotencyStoreError(
    `RedisStore ${operation} failed: unexpected reply from Redis (${JSON.stringify(reply)?.slice(0, 200)}); ` +
      "is another program writing to keys under this store's prefix?",
  );
}

function text(value: Buffer | number | null | undefined): string {
  if (Buffer.isBuffer(value)) return value.toString("utf8");
  throw malformed("decode", value);
}

function count(value: Buffer | number | null | undefined): number {
  if (typeof value === "number") return value;
  throw malformed("decode", value);
}

/** A copy in a fresh buffer: the parser's buffers may share memory with other replies. */
function bytes(value: Buffer | number | null | undefined): Uint8Array | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return new Uint8Array(value);
  throw malformed("decode", value);
}
