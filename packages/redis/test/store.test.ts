import { randomUUID } from "node:crypto";
import { IdempotencyOptionsError, IdempotencyStoreError } from "@idempotency/core";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { RedisStore, type RedisStoreOptions } from "../src/index.js";
import { startSingle } from "./support/redis-server.js";

let redis: Awaited<ReturnType<typeof startSingle>>;
let client: Redis;

beforeAll(async () => {
  redis = await startSingle({ honourRedisUrl: true });
  client = redis.client();
});
afterAll(() => redis?.stop());
afterEach(() => {
  vi.restoreAllMocks();
});

const key = () => randomUUID().replaceAll("-", "").padEnd(64, "0");
const claim = (overrides: Partial<{ leaseMs: number; ttlMs: number; token: string }> = {}) => ({
  token: overrides.token ?? randomUUID(),
  fingerprint: "xxh3-128:0123456789abcdef0123456789abcdef",
  leaseMs: overrides.leaseMs ?? 30_000,
  ttlMs: overrides.ttlMs ?? 86_400_000,
  allowTakeover: true,
});

describe("options", () => {
  function optionError(options: unknown): IdempotencyOptionsError {
    try {
      new RedisStore(options as RedisStoreOptions);
    } catch (error) {
      expect(error).toBeInstanceOf(IdempotencyOptionsError);
      return error as IdempotencyOptionsError;
    }
    throw new Error("expected the constructor to throw");
  }

  it("rejects a missing or wrong client, naming the option", () => {
    expect(optionError(undefined).option).toBe("options");
    const missing = optionError({});
    expect(missing.option).toBe("client");
    expect(missing.message).toBe(
      'Invalid option "client": required: an ioredis `Redis` or `Cluster` instance, e.g. ' +
        "`new RedisStore({ client: new Redis(url) })`.",
    );
    expect(optionError({ client: "redis://127.0.0.1:6379" }).option).toBe("client");
    expect(optionError({ client: { get() {} } }).option).toBe("client");
  });

  it("rejects an unknown option, naming it, so a typo never passes silently", () => {
    const error = optionError({ client, timeout: 500 });
    expect(error.option).toBe("timeout");
    expect(error.message).toBe(
      'Invalid option "timeout": unknown option. Known options: client, prefix, timeoutMs.',
    );
  });

  it("rejects a prefix that is not a string", () => {
    const error = optionError({ client, prefix: 42 });
    expect(error.option).toBe("prefix");
    expect(error.message).toBe(
      'Invalid option "prefix": expected a string such as "idempotency:", got number.',
    );
  });

  it("rejects a timeoutMs that is not a positive whole number of milliseconds", () => {
    for (const timeoutMs of [0, -1, 1.5, Number.NaN, "2000", Number.POSITIVE_INFINITY]) {
      const error = optionError({ client, timeoutMs });
      expect(error.option).toBe("timeoutMs");
      expect(error.message).toContain("expected a positive whole number of milliseconds");
    }
  });
});

describe("key layout", () => {
  it("keeps an in-flight record as one hash under prefix + key, with the TTL as the key's PEXPIRE", async () => {
    const store = new RedisStore({ client, prefix: "layout:" });
    const id = key();
    const args = claim({ leaseMs: 30_000, ttlMs: 3_600_000 });
    expect(await store.begin(id, args)).toEqual({ state: "claimed", takeover: false });
    expect(store.keyOf(id)).toBe(`layout:${id}`);
    expect(await client.type(`layout:${id}`)).toBe("hash");
    const fields = await client.hgetall(`layout:${id}`);
    expect(Object.keys(fields).sort()).toEqual(["fingerprint", "lease_until", "state", "token"]);
    expect(fields).toMatchObject({ state: "in-flight", token: args.token, fingerprint: args.fingerprint });
    const [seconds, micros] = (await client.time()) as [number | string, number | string];
    const serverNow = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const leaseLeft = Number(fields.lease_until) - serverNow;
    expect(leaseLeft).toBeGreaterThan(0);
    expect(leaseLeft).toBeLessThanOrEqual(30_000);
    const ttl = await client.pttl(`layout:${id}`);
    expect(ttl).toBeGreaterThan(3_600_000 - 10_000);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
  });

  it("completes into state, fingerprint and the response bytes, binary-safe, with the TTL from completion", async () => {
    const store = new RedisStore({ client, prefix: "layout:" });
    const id = key();
    const args = claim();
    await store.begin(id, args);
    const response = Uint8Array.from([0, 255, 13, 10, 0xc3, 0x28, 34, 0]);
    expect(await store.complete(id, args.token, response, 120_000)).toBe(true);
    const fields = await client.hgetallBuffer(`layout:${id}`);
    expect(Object.keys(fields).sort()).toEqual(["fingerprint", "response", "state"]);
    expect(fields.state?.toString()).toBe("completed");
    expect(Buffer.compare(fields.response as Buffer, Buffer.from(response))).toBe(0);
    const ttl = await client.pttl(`layout:${id}`);
    expect(ttl).toBeGreaterThan(110_000);
    expect(ttl).toBeLessThanOrEqual(120_000);
  });

  it("stores a null response as no response field and an empty one as an empty field", async () => {
    const store = new RedisStore({ client });
    const none = key();
    const empty = key();
    const a = claim();
    const b = claim();
    await store.begin(none, a);
    await store.begin(empty, b);
    await store.complete(none, a.token, null, 60_000);
    await store.complete(empty, b.token, new Uint8Array(0), 60_000);
    expect(await client.hexists(`idempotency:${none}`, "response")).toBe(0);
    expect(await client.hget(`idempotency:${empty}`, "response")).toBe("");
    expect(await store.begin(none, claim())).toMatchObject({ state: "completed", response: null });
    expect(await store.begin(empty, claim())).toMatchObject({
      state: "completed",
      response: new Uint8Array(0),
    });
  });

  it("extend renews the lease and pushes the TTL out when the lease would outlive it, never cutting it short", async () => {
    const store = new RedisStore({ client });
    const short = key();
    const long = key();
    const a = claim({ leaseMs: 1_000, ttlMs: 1_000 });
    const b = claim({ leaseMs: 1_000, ttlMs: 3_600_000 });
    await store.begin(short, a);
    await store.begin(long, b);
    expect(await store.extend(short, a.token, 60_000)).toBe(true);
    expect(await store.extend(long, b.token, 60_000)).toBe(true);
    expect(await client.pttl(`idempotency:${short}`)).toBeGreaterThan(50_000);
    expect(await client.pttl(`idempotency:${long}`)).toBeGreaterThan(3_500_000);
    const record = await store.get(short);
    expect(record).toMatchObject({ state: "in-flight", token: a.token });
    expect((record as { leaseRemainingMs: number }).leaseRemainingMs).toBeGreaterThan(50_000);
  });

  it("works under an ioredis keyPrefix, which ioredis prepends to the store's own prefix", async () => {
    const prefixed = redis.client({ keyPrefix: "app:" });
    const store = new RedisStore({ client: prefixed, prefix: "idem:" });
    const id = key();
    const args = claim();
    expect(await store.begin(id, args)).toEqual({ state: "claimed", takeover: false });
    expect(await client.hget(`app:idem:${id}`, "token")).toBe(args.token);
    expect(await store.complete(id, args.token, new Uint8Array([7]), 60_000)).toBe(true);
    expect(await store.get(id)).toMatchObject({ state: "completed", response: new Uint8Array([7]) });
    expect(await client.exists(`idem:${id}`)).toBe(0);
  });

  it("two stores with different prefixes on one Redis never see each other's records", async () => {
    const first = new RedisStore({ client, prefix: "app-a:" });
    const second = new RedisStore({ client, prefix: "app-b:" });
    const id = key();
    expect(await first.begin(id, claim())).toEqual({ state: "claimed", takeover: false });
    expect(await second.get(id)).toBeNull();
    expect(await second.begin(id, claim())).toEqual({ state: "claimed", takeover: false });
  });
});

describe("clocks and errors", () => {
  it("leases are measured on the server clock: a process whose clock is an hour off agrees", async () => {
    const store = new RedisStore({ client });
    const id = key();
    const args = claim({ leaseMs: 20_000 });
    vi.spyOn(Date, "now").mockReturnValue(Date.now() + 3_600_000);
    expect(await store.begin(id, args)).toEqual({ state: "claimed", takeover: false });
    vi.spyOn(Date, "now").mockReturnValue(Date.now() - 7_200_000);
    const seen = await new RedisStore({ client: redis.client() }).begin(id, claim());
    expect(seen).toMatchObject({ state: "in-flight" });
    expect((seen as { leaseRemainingMs: number }).leaseRemainingMs).toBeGreaterThan(10_000);
    expect((seen as { leaseRemainingMs: number }).leaseRemainingMs).toBeLessThanOrEqual(20_000);
  });

  it("after close() every call fails with IdempotencyStoreError and the client stays open", async () => {
    const store = new RedisStore({ client });
    await store.close();
    await expect(store.begin(key(), claim())).rejects.toThrow(IdempotencyStoreError);
    await expect(store.get(key())).rejects.toThrow("RedisStore get failed: the store was closed.");
    expect(await client.ping()).toBe("PONG");
  });

  it("a record that is not the store's (another program wrote the key) is a store error, not a crash", async () => {
    const store = new RedisStore({ client, prefix: "foreign:" });
    const id = key();
    await client.set(`foreign:${id}`, "not a hash");
    const error = await store.begin(id, claim()).catch((rejection: unknown) => rejection);
    expect(error).toBeInstanceOf(IdempotencyStoreError);
    expect((error as Error).message).toContain("RedisStore begin failed: ");
    expect((error as Error).message).toContain("WRONGTYPE");
  });
});
