import { describe, expect, it, vi } from "vitest";
import {
  IdempotencyAbortError,
  IdempotencyInProgressError,
  IdempotencyInvalidKeyError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  IdempotencyOptionsError,
  IdempotencyResultNotStoredError,
  IdempotencyStoreError,
} from "../src/index.js";
import { deferred, events, store, useEngineFixture } from "./support.js";

const LEASE = 3_000;

const engine = useEngineFixture({ leaseMs: LEASE });

describe("idempotency.run", () => {
  it("runs the function once and returns its stored result to duplicates", async () => {
    const idempotency = engine();
    let runs = 0;
    const charge = async () => ({ chargeId: `ch_${++runs}`, amount: 1250, at: "2026-01-01T00:00:00Z" });
    const first = await idempotency.run("msg-1", charge);
    const second = await idempotency.run("msg-1", charge);
    expect(first).toEqual({ chargeId: "ch_1", amount: 1250, at: "2026-01-01T00:00:00Z" });
    expect(second).toEqual(first);
    expect(runs).toBe(1);
    expect(events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
    expect(events[0]).toMatchObject({ method: "RUN", path: "" });
  });

  it("stores undefined, null, numbers, strings and arrays faithfully", async () => {
    const idempotency = engine();
    for (const [key, value] of [
      ["u", undefined],
      ["n", null],
      ["0", 0],
      ["s", "text"],
      ["a", [1, "two", { three: 3 }]],
    ] as const) {
      await idempotency.run(key, () => value);
      expect(await idempotency.run(key, () => "ran again")).toEqual(value);
    }
  });

  it("gives the function its key and a not-yet-aborted signal", async () => {
    const idempotency = engine();
    await idempotency.run("k", (context) => {
      expect(context.key).toBe("k");
      expect(context.signal.aborted).toBe(false);
    });
  });

  it("a throw releases the key and is rethrown as is; the next call runs", async () => {
    const idempotency = engine();
    const failure = new Error("payment gateway down");
    await expect(
      idempotency.run("k", async () => {
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(await idempotency.run("k", () => "second attempt")).toBe("second attempt");
    expect(events.map((event) => event.type)).toEqual(["claimed", "released", "claimed", "completed"]);
  });

  it("notStarted releases the key and stores nothing, and still returns the value", async () => {
    const idempotency = engine();
    const result = await idempotency.run("k", (context) => {
      context.notStarted();
      return "skipped";
    });
    expect(result).toBe("skipped");
    expect(await idempotency.run("k", () => "ran")).toBe("ran");
  });

  it("throws IdempotencyInProgressError for a concurrent duplicate: retry after the 1 s hint, with the lease left", async () => {
    const idempotency = engine();
    const gate = deferred();
    const first = idempotency.run("k", async () => {
      await gate.promise;
      return 1;
    });
    await vi.advanceTimersByTimeAsync(500);
    const error = await idempotency.run("k", () => 2).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotencyInProgressError);
    expect(error).toMatchObject({
      code: "ERR_IDEMPOTENCY_IN_PROGRESS",
      retryAfterMs: 1_000,
      leaseRemainingMs: 2_500,
      message: "A call with this key is still running; retry in 1000 ms to get its result.",
    });
    const soon = engine({ retryAfterMs: 50 });
    const quick = soon.run("q", () => gate.promise.then(() => 3));
    await vi.advanceTimersByTimeAsync(0);
    expect(await soon.run("q", () => 4).catch((caught: unknown) => caught)).toMatchObject({
      retryAfterMs: 50,
    });
    gate.resolve();
    expect(await first).toBe(1);
    expect(await quick).toBe(3);
  });

  it("with waitMs, a concurrent duplicate waits and returns the first call's result", async () => {
    const idempotency = engine({ waitMs: 2_000 });
    const gate = deferred();
    const first = idempotency.run("k", async () => {
      await gate.promise;
      return "first";
    });
    await vi.advanceTimersByTimeAsync(0);
    let ran = false;
    const duplicate = idempotency.run("k", () => {
      ran = true;
      return "second";
    });
    await vi.advanceTimersByTimeAsync(300);
    gate.resolve();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await first).toBe("first");
    expect(await duplicate).toBe("first");
    expect(ran).toBe(false);
  });

  it("per-call waitMs overrides the engine's", async () => {
    const idempotency = engine({ waitMs: 0 });
    const gate = deferred();
    const first = idempotency.run("k", async () => {
      await gate.promise;
      return "first";
    });
    await vi.advanceTimersByTimeAsync(0);
    const duplicate = idempotency.run("k", () => "second", { waitMs: 1_000 });
    await vi.advanceTimersByTimeAsync(100);
    gate.resolve();
    await vi.advanceTimersByTimeAsync(200);
    expect(await duplicate).toBe("first");
    await first;
  });

  it("throws IdempotencyKeyReusedError for a different fingerprint, string or bytes", async () => {
    const idempotency = engine();
    await idempotency.run("k", () => 1, { fingerprint: "amount=10" });
    expect(await idempotency.run("k", () => 2, { fingerprint: "amount=10" })).toBe(1);
    await expect(idempotency.run("k", () => 2, { fingerprint: "amount=20" })).rejects.toBeInstanceOf(
      IdempotencyKeyReusedError,
    );
    await idempotency.run("b", () => 1, { fingerprint: new Uint8Array([1, 2]) });
    await expect(
      idempotency.run("b", () => 2, { fingerprint: new Uint8Array([1, 3]) }),
    ).rejects.toMatchObject({ code: "ERR_IDEMPOTENCY_KEY_REUSED" });
  });

  it("keeps scopes apart: two tenants with one key run twice", async () => {
    const idempotency = engine({ scope: (request) => request.headers.get("x-tenant") ?? "none" });
    let runs = 0;
    const a = await idempotency.run("k", () => ++runs, { scope: "tenant-a" });
    const b = await idempotency.run("k", () => ++runs, { scope: "tenant-b" });
    expect([a, b, runs]).toEqual([1, 2, 2]);
  });

  it("keeps scopes apart that differ only in a lone surrogate: two tenants, two runs", async () => {
    const idempotency = engine();
    let runs = 0;
    // JSON.parse('"t\\ud800"') gives such a tenant id; UTF-8 alone would turn both into "t\ufffd".
    const a = await idempotency.run("k", () => ++runs, { scope: "t\ud800" });
    const b = await idempotency.run("k", () => ++runs, { scope: "t\ud801" });
    const c = await idempotency.run("k", () => ++runs, { scope: "t\ufffd" });
    expect([a, b, c, runs]).toEqual([1, 2, 3, 3]);
  });

  it("never meets an HTTP record with the same key", async () => {
    const idempotency = engine();
    await idempotency.run("k", () => "job");
    const keys = events.filter((event) => event.type === "claimed").map((event) => event.key);
    expect(keys).toHaveLength(1);
    expect(await store.inner.get(keys[0] as string)).not.toBeNull();
  });

  it("throws the store's IdempotencyStoreError when the store is down, without running", async () => {
    const idempotency = engine();
    store.down = true;
    let ran = false;
    const error = await idempotency
      .run("k", () => {
        ran = true;
      })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotencyStoreError);
    expect(error).toMatchObject({ code: "ERR_IDEMPOTENCY_STORE" });
    expect(ran).toBe(false);
  });

  it("with failOpen, runs unprotected when the store is down", async () => {
    const idempotency = engine({ failOpen: true });
    store.down = true;
    expect(await idempotency.run("k", () => "unprotected")).toBe("unprotected");
    expect(events.map((event) => event.type)).toEqual(["fail-open"]);
  });

  it("a result too large to store: returned once, duplicates throw IdempotencyResultNotStoredError", async () => {
    const idempotency = engine({ maxResponseBytes: 10 });
    let runs = 0;
    const big = () => {
      runs++;
      return "x".repeat(20);
    };
    expect(await idempotency.run("k", big)).toBe("x".repeat(20));
    await expect(idempotency.run("k", big)).rejects.toBeInstanceOf(IdempotencyResultNotStoredError);
    expect(runs).toBe(1);
  });

  it("a result that is not JSON-serialisable is not stored, and never runs twice", async () => {
    const idempotency = engine();
    let runs = 0;
    const bigint = () => {
      runs++;
      return { total: 10n };
    };
    expect(await idempotency.run("k", bigint)).toEqual({ total: 10n });
    await expect(idempotency.run("k", bigint)).rejects.toMatchObject({
      code: "ERR_IDEMPOTENCY_RESULT_NOT_STORED",
    });
    expect(runs).toBe(1);
  });

  it("aborts the signal when the call loses its lease to another", async () => {
    const idempotency = engine();
    let signal: AbortSignal | undefined;
    const gate = deferred();
    const first = idempotency.run("k", async (context) => {
      signal = context.signal;
      await gate.promise;
      return "late";
    });
    await vi.advanceTimersByTimeAsync(0);
    // Another process takes the key over after the lease expired without renewals (e.g. a long GC pause).
    const record = await store.inner.get(events[0]?.key ?? "");
    await store.inner.release(events[0]?.key ?? "", record?.state === "in-flight" ? record.token : "");
    await idempotency.run("k", () => "taken over");
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toMatchObject({ code: "ERR_IDEMPOTENCY_LEASE_LOST" });
    gate.resolve();
    expect(await first).toBe("late");
    expect(await idempotency.run("k", () => "again")).toBe("taken over");
    expect(events.map((event) => event.type)).toContain("lease-lost");
  });

  it("renews for as long as the function runs: duplicates over 3 leases get InProgress, then the result", async () => {
    const idempotency = engine();
    const gate = deferred();
    let runs = 0;
    const first = idempotency.run("k", async () => {
      runs++;
      await gate.promise;
      return { charged: runs };
    });
    for (let tick = 0; tick < 9; tick++) {
      await vi.advanceTimersByTimeAsync(LEASE / 3);
      const duplicate = await idempotency
        .run("k", () => ({ charged: -1 }))
        .catch((caught: unknown) => caught);
      expect(duplicate).toBeInstanceOf(IdempotencyInProgressError);
    }
    gate.resolve();
    expect(await first).toEqual({ charged: 1 });
    expect(await idempotency.run("k", () => ({ charged: -1 }))).toEqual({ charged: 1 });
    expect(runs).toBe(1);
    expect(store.calls.extend).toBe(9);
  });

  it("maxExecutionMs: stops renewing at the bound, aborts the signal and emits execution-limit", async () => {
    const idempotency = engine({ maxExecutionMs: 2 * LEASE });
    const gate = deferred();
    let signal: AbortSignal | undefined;
    const hung = idempotency.run("k", async (context) => {
      signal = context.signal;
      await gate.promise;
      return "late";
    });
    await vi.advanceTimersByTimeAsync(2 * LEASE - 1);
    expect(signal?.aborted).toBe(false);
    expect(store.calls.extend).toBe(5);
    await vi.advanceTimersByTimeAsync(1); // the sixth tick finds the bound reached
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toBeInstanceOf(IdempotencyAbortError);
    expect(signal?.reason).toMatchObject({ code: "ERR_IDEMPOTENCY_EXECUTION_LIMIT", name: "AbortError" });
    expect(store.calls.extend).toBe(5);
    expect(events.at(-1)).toMatchObject({ type: "execution-limit", maxExecutionMs: 2 * LEASE });
    // Until the last renewed lease ends the key is still in progress; then a retry takes it over.
    await vi.advanceTimersByTimeAsync(LEASE - LEASE / 3 - 1);
    await expect(idempotency.run("k", () => "again")).rejects.toBeInstanceOf(IdempotencyInProgressError);
    await vi.advanceTimersByTimeAsync(1);
    expect(await idempotency.run("k", () => "again")).toBe("again");
    gate.resolve();
    expect(await hung).toBe("late");
    expect(events.at(-1)).toMatchObject({ type: "lease-lost", operation: "complete" });
  });

  it("maxExecutionMs: false renews for as long as the function runs", async () => {
    const idempotency = engine({ maxExecutionMs: false, ttlMs: 4 * LEASE });
    expect(idempotency.options.maxExecutionMs).toBe(Number.POSITIVE_INFINITY);
    const gate = deferred();
    const first = idempotency.run("k", () => gate.promise.then(() => "done"));
    await vi.advanceTimersByTimeAsync(20 * LEASE);
    expect(store.calls.extend).toBe(60);
    await expect(idempotency.run("k", () => "x")).rejects.toBeInstanceOf(IdempotencyInProgressError);
    gate.resolve();
    expect(await first).toBe("done");
  });

  it('throws IdempotencyKeyLockedError, not InProgress with 0 ms, once a lease expired under "conflict"', async () => {
    const idempotency = engine({ onLeaseExpired: "conflict", maxExecutionMs: LEASE });
    void idempotency.run("k", () => new Promise(() => {})); // never settles, like a hung call
    await vi.advanceTimersByTimeAsync(LEASE + LEASE / 3 + LEASE);
    const error = await idempotency.run("k", () => 1).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotencyKeyLockedError);
    expect(error).toMatchObject({ code: "ERR_IDEMPOTENCY_KEY_LOCKED" });
    expect((error as Error).message).toMatch(/Do not retry it; use a new key/);
  });

  it("rejects bad keys, functions and options with typed errors", async () => {
    const idempotency = engine({ maxKeyLength: 8 });
    await expect(idempotency.run("", () => 1)).rejects.toBeInstanceOf(IdempotencyInvalidKeyError);
    await expect(idempotency.run("123456789", () => 1)).rejects.toThrow(
      "run() needs a key: a non-empty string of at most 8 characters (maxKeyLength), such as a message id; got a string of 9.",
    );
    await expect(idempotency.run(42 as unknown as string, () => 1)).rejects.toMatchObject({
      code: "ERR_IDEMPOTENCY_INVALID_KEY",
    });
    await expect(idempotency.run("k", "fn" as unknown as () => void)).rejects.toBeInstanceOf(TypeError);
    await expect(idempotency.run("k", () => 1, { scope: "" })).rejects.toBeInstanceOf(
      IdempotencyOptionsError,
    );
    await expect(
      idempotency.run("k", () => 1, { fingerprint: 5 as unknown as string }),
    ).rejects.toMatchObject({ option: "fingerprint" });
    await expect(
      idempotency.run("k", () => 1, { scop: "a" } as unknown as { scope: string }),
    ).rejects.toMatchObject({ option: "scop" });
    await expect(idempotency.run("k", () => 1, { waitMs: -5 })).rejects.toMatchObject({ option: "waitMs" });
    const scoped = engine({ scope: () => "tenant" });
    await expect(scoped.run("k", () => 1)).rejects.toThrow(/run\(\) needs \{ scope \}/);
    expect(store.calls.begin).toBe(0);
  });
});
