import { randomUUID } from "node:crypto";
import { createIdempotency, type Idempotency, type IdempotencyStore } from "@idempotency/core";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { RedisStore } from "../src/index.js";
import { deferred, type HandlerReply, send } from "./support/engine.js";
import { CommandWatch } from "./support/monitor.js";
import { startSingle } from "./support/redis-server.js";

// A private server always: this file flushes the script cache, which must not touch anyone else's Redis.
let redis: Awaited<ReturnType<typeof startSingle>>;
let client: Redis;
let watch: CommandWatch;
let idempotency: Idempotency;

const created: HandlerReply = {
  status: 201,
  headers: { "content-type": "application/json", location: "/orders/1" },
  body: '{"id":1}',
};

beforeAll(async () => {
  redis = await startSingle({ honourRedisUrl: false });
  client = redis.client({ connectionName: "idempotency-store" });
  await client.ping();
  watch = await CommandWatch.start(redis.url, "idempotency-store");
  // A lease far longer than any request here, so no renewal (extend) fires while counting.
  idempotency = createIdempotency({
    store: new RedisStore({ client }),
    scope: "global",
    leaseMs: 600_000,
    ttlMs: 3_600_000,
  });
});
afterAll(async () => {
  watch?.stop();
  await redis?.stop();
});

describe("round trips between the store's connection and Redis", () => {
  it("the very first request learns the server clock and loads both scripts: TIME, then EVALSHA → NOSCRIPT → EVAL twice", async () => {
    const { sent, insideScripts } = await watch.during(async () => {
      const response = await send(idempotency, { key: randomUUID() }, () => created);
      expect(response).toMatchObject({ status: 201, body: '{"id":1}', executed: true });
    });
    expect(sent).toEqual(["time", "evalsha", "eval", "evalsha", "eval"]);
    expect(insideScripts).toBeGreaterThan(0); // the scripts' own commands are there, and not counted
  });

  it("a first execution whose handler finishes within the lease costs exactly 2 (begin + complete), 9 commands inside them", async () => {
    const { sent, insideScripts } = await watch.during(async () => {
      const response = await send(idempotency, { key: randomUUID() }, () => created);
      expect(response).toEqual({ ...created, executed: true });
    });
    expect(sent).toEqual(["evalsha", "evalsha"]);
    // begin: TIME, HMGET, HSET, PEXPIRE; complete: TIME, HMGET, PEXPIRE, HDEL, HSET (state and response in one).
    expect(insideScripts).toBe(9);
  });

  it("a replay costs exactly 1", async () => {
    const key = randomUUID();
    await send(idempotency, { key }, () => created);
    let runs = 0;
    const { sent, insideScripts } = await watch.during(async () => {
      const replay = await send(idempotency, { key }, () => {
        runs++;
        return created;
      });
      expect(replay.status).toBe(201);
      expect(replay.body).toBe('{"id":1}');
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      expect(replay.headers.location).toBe("/orders/1");
      expect(replay.executed).toBe(false);
    });
    expect(sent).toEqual(["evalsha"]);
    expect(insideScripts).toBe(2); // TIME, HMGET
    expect(runs).toBe(0);
  });

  it("a 409 for a duplicate of a running request costs exactly 1", async () => {
    const key = randomUUID();
    const release = deferred();
    const started = deferred();
    const first = send(idempotency, { key }, async () => {
      started.resolve();
      await release.promise;
      return created;
    });
    await started.promise;
    const { sent } = await watch.during(async () => {
      const duplicate = await send(idempotency, { key }, () => created);
      expect(duplicate.status).toBe(409);
      expect(duplicate.headers["content-type"]).toBe("application/problem+json");
      expect(Number(duplicate.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      expect(duplicate.executed).toBe(false);
    });
    expect(sent).toEqual(["evalsha"]);
    release.resolve();
    expect(await first).toEqual({ ...created, executed: true });
  });

  it("a 422 for a key reused with another body costs exactly 1", async () => {
    const key = randomUUID();
    await send(idempotency, { key, body: '{"amount":1}' }, () => created);
    const { sent } = await watch.during(async () => {
      const reused = await send(idempotency, { key, body: '{"amount":2}' }, () => created);
      expect(reused.status).toBe(422);
      expect(reused.executed).toBe(false);
    });
    expect(sent).toEqual(["evalsha"]);
  });
});

describe("lease renewal", () => {
  it("a request running past leaseMs / 3 adds exactly 1 (extend) per renewal", async () => {
    // Only the engine's renewal interval is faked; sockets and timeouts run in real time.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      // The engine's store, observed: resolves `renewal` when an extend has answered (no extra commands).
      const store = new RedisStore({ client });
      let renewal = deferred<boolean>();
      const observed: IdempotencyStore = {
        begin: (key, args) => store.begin(key, args),
        complete: (key, token, response, ttlMs) => store.complete(key, token, response, ttlMs),
        async extend(key, token, leaseMs) {
          const renewed = await store.extend(key, token, leaseMs);
          renewal.resolve(renewed);
          return renewed;
        },
        release: (key, token) => store.release(key, token),
        get: (key) => store.get(key),
        delete: (key) => store.delete(key),
      };
      const engine = createIdempotency({ store: observed, scope: "global", leaseMs: 30_000 });
      /** One request whose handler is held open across exactly one renewal period. */
      const renewOnce = async () => {
        renewal = deferred<boolean>();
        const release = deferred();
        const started = deferred();
        const first = send(engine, { key: randomUUID() }, async () => {
          started.resolve();
          await release.promise;
          return created;
        });
        await started.promise;
        vi.advanceTimersByTime(10_000); // leaseMs / 3
        expect(await renewal.promise).toBe(true);
        release.resolve();
        expect(await first).toEqual({ ...created, executed: true });
      };

      const firstUse = await watch.during(renewOnce);
      // This store's first call learns the server clock; extend's script is new to the server.
      expect(firstUse.sent).toEqual(["time", "evalsha", "evalsha", "eval", "evalsha"]);
      const { sent } = await watch.during(renewOnce);
      expect(sent).toEqual(["evalsha", "evalsha", "evalsha"]);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("NOSCRIPT recovery", () => {
  it("after SCRIPT FLUSH each script is reloaded once by EVAL, transparently, then runs by SHA again", async () => {
    expect(await watch.admin.script("FLUSH")).toBe("OK");
    const key = randomUUID();
    let runs = 0;
    const handler = () => {
      runs++;
      return created;
    };
    const afterFlush = await watch.during(async () => {
      expect(await send(idempotency, { key }, handler)).toEqual({ ...created, executed: true });
    });
    expect(afterFlush.sent).toEqual(["evalsha", "eval", "evalsha", "eval"]);

    const replay = await watch.during(async () => {
      const response = await send(idempotency, { key }, handler);
      expect(response.status).toBe(201);
      expect(response.headers["idempotent-replayed"]).toBe("true");
    });
    expect(replay.sent).toEqual(["evalsha"]);
    expect(runs).toBe(1);

    const next = await watch.during(async () => {
      expect(await send(idempotency, { key: randomUUID() }, () => created)).toMatchObject({ status: 201 });
    });
    expect(next.sent).toEqual(["evalsha", "evalsha"]);
  });
});
