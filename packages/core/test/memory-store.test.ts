import { describe, expect, it } from "vitest";
import { MemoryStore } from "../src/index.js";

const args = (token: string) => ({
  token,
  fingerprint: "f",
  leaseMs: 1_000,
  ttlMs: 10_000,
  allowTakeover: true,
});

describe("MemoryStore", () => {
  it("sweeps expired records incrementally, so unique-key traffic cannot grow memory forever", async () => {
    let now = 0;
    const store = new MemoryStore({ now: () => now });
    // 100 000 unique keys, one per ms, each completed: at most ~ttl worth (10 000) should be live.
    for (let i = 0; i < 100_000; i++) {
      now++;
      const key = `k${i}`;
      await store.begin(key, args("t"));
      await store.complete(key, "t", null, 10_000);
    }
    expect(store.size).toBeLessThanOrEqual(3 * 10_000);
    expect(store.size).toBeGreaterThanOrEqual(10_000);
  });

  it("treats expired records as absent on access, before any sweep", async () => {
    let now = 0;
    const store = new MemoryStore({ now: () => now });
    await store.begin("a", args("t1"));
    await store.complete("a", "t1", Uint8Array.of(1), 500);
    now = 499;
    expect(await store.get("a")).toEqual({
      state: "completed",
      fingerprint: "f",
      response: Uint8Array.of(1),
      ttlRemainingMs: 1,
    });
    now = 500;
    expect(await store.get("a")).toBeNull();
    expect(await store.begin("a", args("t2"))).toEqual({ state: "claimed", takeover: false });
  });

  it("keeps its own copy of a stored response", async () => {
    const store = new MemoryStore();
    const response = Uint8Array.of(1, 2, 3);
    await store.begin("a", args("t"));
    await store.complete("a", "t", response, 1_000);
    response[0] = 9;
    expect(await store.begin("a", args("u"))).toEqual({
      state: "completed",
      fingerprint: "f",
      response: Uint8Array.of(1, 2, 3),
    });
  });

  it("rejects a clock that is not a function", () => {
    expect(() => new MemoryStore({ now: 5 as unknown as () => number })).toThrow(/Invalid option "now"/);
  });
});
