import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { IdempotencyOptionsError, MemoryStore } from "../src/index.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

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

  it("frees its records' memory on close(), also while the store itself is still referenced", async () => {
    const store = new MemoryStore();
    const response = new Uint8Array(4_096);
    for (let i = 0; i < 5_000; i++) {
      await store.begin(`k${i}`, args("t"));
      await store.complete(`k${i}`, "t", response, 10_000);
    }
    // Small responses are kept as strings on the heap, large ones as buffers of their own: count both.
    const used = () => {
      const { heapUsed, arrayBuffers } = process.memoryUsage();
      return heapUsed + arrayBuffers;
    };
    gc();
    const full = used();
    await store.close();
    gc();
    const closed = used();
    expect(store.size).toBe(0);
    // 5 000 copies of 4 KiB (20 MB) were held; nothing may keep them reachable once the store is closed.
    expect(full - closed).toBeGreaterThan(15_000_000);
  });

  it("keeps every byte of small and large responses (latin1 strings below 16 KiB, bytes above), as its own copy", async () => {
    const store = new MemoryStore();
    for (const size of [1, 255, 16_383, 16_384, 100_000]) {
      const response = Buffer.alloc(size);
      for (let i = 0; i < size; i++) response[i] = (i * 7919 + size) % 256; // every byte value, 0x80–0xff too
      const expected = Buffer.from(response);
      await store.begin(`k${size}`, args("t"));
      expect(await store.complete(`k${size}`, "t", response, 10_000)).toBe(true);
      response.fill(0); // the caller reuses its buffer
      const replayed = await store.begin(`k${size}`, args("u"));
      expect(
        replayed.state === "completed" && Buffer.from(replayed.response as Uint8Array).equals(expected),
      ).toBe(true);
      const record = await store.get(`k${size}`);
      expect(
        record?.state === "completed" && Buffer.from(record.response as Uint8Array).equals(expected),
      ).toBe(true);
      if (record?.state === "completed") (record.response as Uint8Array).fill(1); // a reader changes its copy
      const again = await store.get(`k${size}`);
      expect(again?.state === "completed" && Buffer.from(again.response as Uint8Array).equals(expected)).toBe(
        true,
      );
    }
  });

  it("rejects a clock that is not a function", () => {
    expect(() => new MemoryStore({ now: 5 as unknown as () => number })).toThrow(/Invalid option "now"/);
  });

  describe("maxEntries", () => {
    async function completeKey(store: MemoryStore, key: string) {
      await store.begin(key, args(`t-${key}`));
      await store.complete(key, `t-${key}`, new Uint8Array([1]), 10_000);
    }

    it("evicts the least recently used completed record; a replay counts as a use", async () => {
      const store = new MemoryStore({ maxEntries: 3 });
      for (const key of ["a", "b", "c"]) await completeKey(store, key);
      expect((await store.begin("a", args("x"))).state).toBe("completed"); // a is now the most recent
      await completeKey(store, "d");
      expect(store.size).toBe(3);
      expect(await store.get("b")).toBeNull();
      for (const key of ["a", "c", "d"]) expect((await store.get(key))?.state).toBe("completed");
      await completeKey(store, "e");
      expect(await store.get("c")).toBeNull();
    });

    it("never evicts an in-flight claim, even beyond the bound", async () => {
      const store = new MemoryStore({ maxEntries: 2 });
      await completeKey(store, "done");
      for (const key of ["x", "y", "z"]) {
        expect(await store.begin(key, args(`t-${key}`))).toEqual({ state: "claimed", takeover: false });
      }
      expect(store.size).toBe(3);
      expect(await store.get("done")).toBeNull();
      for (const key of ["x", "y", "z"]) {
        expect(await store.begin(key, args("other"))).toMatchObject({ state: "in-flight" });
        expect(await store.complete(key, `t-${key}`, null, 10_000)).toBe(true);
      }
      // Back under pressure, the oldest completions go first on the next claim.
      await store.begin("w", args("t-w"));
      expect(store.size).toBe(2);
      expect(await store.get("x")).toBeNull();
      expect((await store.get("z"))?.state).toBe("completed");
    });

    it("holds at most maxEntries records through 200 000 unique keys", async () => {
      const store = new MemoryStore({ maxEntries: 1_000 });
      for (let i = 0; i < 200_000; i++) await completeKey(store, `k${i}`);
      expect(store.size).toBe(1_000);
      expect(await store.get("k198999")).toBeNull();
      expect((await store.get("k199000"))?.state).toBe("completed");
    });

    it("rejects a bound that is not a whole number of at least 1", () => {
      for (const maxEntries of [0, -1, 1.5, Number.NaN]) {
        expect(() => new MemoryStore({ maxEntries })).toThrow(IdempotencyOptionsError);
      }
      expect(() => new MemoryStore({ maxEntries: 0 })).toThrow(
        'Invalid option "maxEntries": expected a positive whole number of records, got 0.',
      );
    });
  });
});
