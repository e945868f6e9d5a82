import { describeStore } from "@idempotency/conformance";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../src/index.js";
import { startCluster } from "./support/redis-server.js";

let cluster: Awaited<ReturnType<typeof startCluster>>;

beforeAll(async () => {
  cluster = await startCluster();
});
afterAll(() => cluster?.stop());

// Every instance is its own ioredis Cluster client with its own connections to the three masters.
// A generous timeout: three masters and the suite share 2 cores with the other packages' tests in CI.
describeStore(
  "RedisStore (3-master Redis Cluster)",
  () => new RedisStore({ client: cluster.client(), timeoutMs: 10_000 }),
);

describe("RedisStore on Redis Cluster", () => {
  it("spreads records over all three masters, each record on the node that owns its slot", async () => {
    const store = new RedisStore({ client: cluster.client(), prefix: "spread:", timeoutMs: 10_000 });
    const keys = Array.from({ length: 60 }, (_, i) => i.toString(16).padStart(64, "0"));
    for (const key of keys) {
      const result = await store.begin(key, {
        token: `t-${key}`,
        fingerprint: "xxh3-128:0",
        leaseMs: 60_000,
        ttlMs: 120_000,
        allowTakeover: false,
      });
      expect(result).toEqual({ state: "claimed", takeover: false });
    }
    const counts: number[] = [];
    for (const server of cluster.servers) {
      const node = new Redis(server.port, "127.0.0.1");
      try {
        const found = await node.keys("spread:*");
        counts.push(found.length);
        for (const found1 of found) expect(await node.hget(found1, "state")).toBe("in-flight");
      } finally {
        node.disconnect();
      }
    }
    expect(counts.reduce((a, b) => a + b, 0)).toBe(keys.length);
    for (const count of counts) expect(count).toBeGreaterThan(0);
  });

  it("recovers from SCRIPT FLUSH on every master without a manual step", async () => {
    const store = new RedisStore({ client: cluster.client(), prefix: "flush:", timeoutMs: 10_000 });
    const keys = Array.from({ length: 12 }, (_, i) => i.toString(16).padStart(64, "a"));
    const args = (token: string) => ({
      token,
      fingerprint: "xxh3-128:1",
      leaseMs: 60_000,
      ttlMs: 120_000,
      allowTakeover: false,
    });
    for (const key of keys) await store.begin(key, args(`first-${key}`));
    for (const server of cluster.servers) {
      const node = new Redis(server.port, "127.0.0.1");
      try {
        expect(await node.script("FLUSH")).toBe("OK");
      } finally {
        node.disconnect();
      }
    }
    for (const key of keys) {
      expect(await store.complete(key, `first-${key}`, new Uint8Array([1, 2, 3]), 120_000)).toBe(true);
      const again = await store.begin(key, args(`second-${key}`));
      expect(again).toEqual({
        state: "completed",
        fingerprint: "xxh3-128:1",
        response: new Uint8Array([1, 2, 3]),
      });
    }
  });
});
