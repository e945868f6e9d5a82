import { describe, expect, it } from "vitest";
import { IdempotencyStoreError, MemoryStore, type StoreCall, wrapStore } from "../src/index.js";
import { instrumentedStore } from "../src/testing.js";

const begin = { token: "t1", fingerprint: "f", leaseMs: 1_000, ttlMs: 60_000, allowTakeover: true };

describe("wrapStore", () => {
  it("hands every operation to the interceptor with its arguments by name, and answers with its answer", async () => {
    const inner = instrumentedStore();
    const seen: StoreCall[] = [];
    const store = wrapStore(inner, (call, proceed) => {
      seen.push(call);
      return proceed();
    });
    expect(await store.begin("k", begin, { timeoutMs: 5 })).toEqual({ state: "claimed", takeover: false });
    expect(await store.extend("k", "t1", 2_000)).toBe(true);
    expect(await store.complete("k", "t1", new Uint8Array([1, 2]), 60_000)).toBe(true);
    expect((await store.get("k"))?.state).toBe("completed");
    expect(await store.release("k", "t1")).toBe(false);
    expect(await store.delete("k")).toBe(true);
    expect(seen).toEqual([
      { operation: "begin", key: "k", args: begin, options: { timeoutMs: 5 } },
      { operation: "extend", key: "k", token: "t1", leaseMs: 2_000, options: undefined },
      {
        operation: "complete",
        key: "k",
        token: "t1",
        response: new Uint8Array([1, 2]),
        ttlMs: 60_000,
        options: undefined,
      },
      { operation: "get", key: "k", options: undefined },
      { operation: "release", key: "k", token: "t1", options: undefined },
      { operation: "delete", key: "k", options: undefined },
    ]);
    expect(inner.log.map((call) => call.operation)).toEqual(seen.map((call) => call.operation));
  });

  it("passes the deadline given to proceed on to the store, the caller's when none is given", async () => {
    const inner = instrumentedStore();
    const store = wrapStore(inner, (call, proceed) =>
      call.operation === "get" ? proceed({ timeoutMs: 9 }) : proceed(),
    );
    await store.get("k", { timeoutMs: 1 });
    await store.delete("k", { timeoutMs: 1 });
    expect(inner.log.map((call) => call.options)).toEqual([{ timeoutMs: 9 }, { timeoutMs: 1 }]);
  });

  it("answers without the store when the interceptor does, and passes its errors on", async () => {
    const inner = instrumentedStore();
    const store = wrapStore(inner, async (call) => {
      if (call.operation === "get") return null;
      throw new IdempotencyStoreError(`refused ${call.operation}`);
    });
    expect(await store.get("k")).toBeNull();
    await expect(store.delete("k")).rejects.toThrow("refused delete");
    expect(inner.totalCalls).toBe(0);
  });

  it("forwards close to the wrapped store, and has none when it has none", async () => {
    const memory = new MemoryStore();
    let closed = 0;
    const withClose = {
      begin: memory.begin.bind(memory),
      complete: memory.complete.bind(memory),
      extend: memory.extend.bind(memory),
      release: memory.release.bind(memory),
      get: memory.get.bind(memory),
      delete: memory.delete.bind(memory),
      close: async () => {
        closed += 1;
      },
    };
    const wrapped = wrapStore(withClose, (_call, proceed) => proceed());
    await wrapped.close?.();
    expect(closed).toBe(1);
    const { close: _close, ...withoutClose } = withClose;
    expect(wrapStore(withoutClose, (_call, proceed) => proceed()).close).toBeUndefined();
  });
});

describe("instrumentedStore", () => {
  it("counts, fails, and recovers as its instruments say", async () => {
    const store = instrumentedStore();
    store.failures.begin = 1;
    await expect(store.begin("k", begin)).rejects.toThrow("Store begin failed: read ECONNRESET");
    expect(await store.begin("k", begin)).toEqual({ state: "claimed", takeover: false });
    store.down = true;
    await expect(store.get("k")).rejects.toThrow("Store get failed: connect ECONNREFUSED 127.0.0.1:6379");
    store.down = false;
    expect(store.calls).toEqual({ begin: 2, complete: 0, extend: 0, release: 0, get: 1, delete: 0 });
    expect(store.totalCalls).toBe(3);
  });

  it("silences the renewals of the owner that last claimed a key, and only those", async () => {
    const store = instrumentedStore();
    await store.begin("k", begin);
    store.silenceOwnerOf("k");
    expect(await store.extend("k", "t1", 5_000)).toBe(true);
    expect(await store.extend("k", "other", 5_000)).toBe(false);
    expect(store.calls.extend).toBe(1);
  });

  it("holds calls at the gate until the test runs them, and resolves whenCalled on the count", async () => {
    const store = instrumentedStore();
    const held: Array<() => void> = [];
    store.gate = (run) => held.push(run);
    const called = store.whenCalled("begin", 2);
    const first = store.begin("k", begin);
    const second = store.begin("k", { ...begin, token: "t2" });
    await called;
    await new Promise((resolve) => setImmediate(resolve));
    expect(held).toHaveLength(2);
    held[1]?.();
    held[0]?.();
    expect((await second).state).toBe("claimed");
    expect((await first).state).toBe("in-flight");
  });
});
