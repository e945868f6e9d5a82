/**
 * The client against Express with @idempotency/express, whose lease follows the handler: renewed for as long
 * as the handler runs, whether or not its client is still connected, until `maxExecutionMs`. Real sockets on
 * loopback; one fake clock for both halves: vitest's fake timers drive the client's `attemptTimeoutMs` and its
 * waits, the engine's lease renewal, the handler's work and the engine's and store's `Date.now`. The test moves
 * the clock only while both sides are idle (the client waiting, the server holding no request), by exactly
 * the wait the client asked for, so every lease and `Retry-After` below is exact.
 */
import type { IdempotencyEvent } from "@idempotency/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  IdempotencyInProgressError,
  IdempotencyKeyLockedError,
  IdempotentFetchGaveUpError,
  idempotentFetch,
  PROBLEM_TYPES,
  type RetryEvent,
} from "../src/index.js";
import { eventLog, ordersServer, type Running } from "./support.js";

const open: Running[] = [];
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(open.splice(0).map((running) => running.close()));
});

function useFakeClock(): number {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  return Date.now();
}

const order = (item: string): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ item }),
});

/** What the engine did, when (ms after the start) and, for a duplicate, with how much lease left. */
function timeline(events: IdempotencyEvent[], start: number) {
  return events.map((event) => [
    event.type,
    event.at - start,
    ...(event.type === "in-progress" ? [event.leaseRemainingMs] : []),
  ]);
}

describe("a handler that outlives its client", () => {
  it("client times out, the handler runs on 3× its lease, retries get 409 until it ends: one run, the original response replayed", async () => {
    const start = useFakeClock();
    const engine = eventLog<IdempotencyEvent>();
    // leaseMs 1 s, renewed every 333 ms; the handler takes 3 s.
    const server = await ordersServer({
      now: () => Date.now(),
      workMs: 3_000,
      engine: { leaseMs: 1_000, onEvent: engine.push },
    });
    open.push(server);
    const retries = eventLog<RetryEvent>();

    const pending = idempotentFetch(`${server.url}/orders`, order("chair"), {
      attemptTimeoutMs: 400,
      maxAttempts: 10,
      random: () => 0.5,
      onRetry: retries.push,
    });
    await server.started;

    await vi.advanceTimersByTimeAsync(400); // attempt 1 times out: the client leaves, the handler runs on
    await Promise.all([retries.reached(1), server.clientLeft]);
    await vi.advanceTimersByTimeAsync(50); // the backoff: attempt 2 gets 409
    await retries.reached(2);
    await vi.advanceTimersByTimeAsync(1_000); // Retry-After: attempt 3 gets 409
    await retries.reached(3);
    await vi.advanceTimersByTimeAsync(1_000); // attempt 4 gets 409
    await retries.reached(4);
    await vi.advanceTimersByTimeAsync(550); // 3 s: the handler answers its departed client
    await engine.reached(5);
    await vi.advanceTimersByTimeAsync(450); // attempt 5: the replay
    const response = await Promise.race([
      pending,
      retries.reached(5).then((): never => {
        throw new Error(`attempt 5 was retried too: ${retries.events[4]!.status}`);
      }),
    ]);

    expect(response.status).toBe(201);
    expect(response.headers.get("location")).toBe("/orders/1");
    expect(await response.json()).toEqual({ id: 1, item: "chair" });
    expect(response.replayed).toBe(true);
    expect(response.attempts).toBe(5);
    expect(server.executions()).toBe(1);
    expect(server.keys).toEqual(Array(5).fill(`"${response.idempotencyKey}"`));
    expect(
      retries.events.map(({ attempt, reason, status, delayMs }) => [attempt, reason, status, delayMs]),
    ).toEqual([
      [1, "timeout", undefined, 50],
      [2, "status", 409, 1_000],
      [3, "status", 409, 1_000],
      [4, "status", 409, 1_000],
    ]);
    expect(retries.events.slice(1).map((event) => event.problem?.type)).toEqual(
      Array(3).fill(PROBLEM_TYPES.inProgress),
    );
    // Renewed every 333 ms after the client left: each 409 finds 883, 882, 881 ms of lease left. Had renewal
    // stopped when the client left (400 ms), the lease would have ended at 1 333 and attempt 3 run it again.
    expect(timeline(engine.events, start)).toEqual([
      ["claimed", 0],
      ["in-progress", 450, 883],
      ["in-progress", 1_450, 882],
      ["in-progress", 2_450, 881],
      ["completed", 3_000],
      ["replayed", 3_450],
    ]);
  });
});

describe("a key locked for good", () => {
  it('a hung handler under onLeaseExpired "conflict" (maxExecutionMs = leaseMs): 409s while its lease lasts, then IdempotencyKeyLockedError after exactly one attempt past the lock', async () => {
    const start = useFakeClock();
    const engine = eventLog<IdempotencyEvent>();
    // The handler never answers. Renewal stops at maxExecutionMs (1.5 s), as after a crash: the lease
    // renewed at 1 s ends at 2.5 s, and "conflict" never lets a retry run it again.
    const server = await ordersServer({
      now: () => Date.now(),
      gate: new Promise<void>(() => {}),
      engine: { leaseMs: 1_500, maxExecutionMs: 1_500, onLeaseExpired: "conflict", onEvent: engine.push },
    });
    open.push(server);
    const retries = eventLog<RetryEvent>();

    const pending = idempotentFetch(`${server.url}/orders`, order("piano"), {
      key: "order-88",
      attemptTimeoutMs: 400,
      maxAttempts: 10,
      random: () => 0.5,
      onRetry: retries.push,
    });
    const settled = pending.catch((caught: unknown) => caught);
    await server.started;

    await vi.advanceTimersByTimeAsync(400); // attempt 1 times out
    await Promise.all([retries.reached(1), server.clientLeft]);
    await vi.advanceTimersByTimeAsync(50); // attempt 2: 409 in progress
    await retries.reached(2);
    await vi.advanceTimersByTimeAsync(1_000); // attempt 3: 409 in progress
    await retries.reached(3);
    await vi.advanceTimersByTimeAsync(1_000); // attempt 4: 409 in progress, 50 ms of lease left
    await retries.reached(4);
    await vi.advanceTimersByTimeAsync(1_000); // the lock began at 2 500; attempt 5 (3 450): key-locked
    const error = await Promise.race([settled, retries.reached(5).then(() => "retried a key-locked 409")]);

    expect(error).toBeInstanceOf(IdempotencyKeyLockedError);
    expect(error).not.toBeInstanceOf(IdempotentFetchGaveUpError);
    expect(error).not.toBeInstanceOf(IdempotencyInProgressError);
    const locked = error as IdempotencyKeyLockedError;
    expect(locked.code).toBe("ERR_IDEMPOTENCY_KEY_LOCKED");
    expect(locked.idempotencyKey).toBe("order-88");
    expect(locked.attempts).toBe(5);
    expect(locked.problem).toMatchObject({
      type: PROBLEM_TYPES.keyLocked,
      title: "Idempotency key locked",
      status: 409,
      retryAfterMs: undefined,
    });
    expect(locked.response.status).toBe(409);
    expect(locked.response.headers.get("retry-after")).toBeNull();
    expect((await locked.response.json()).type).toBe(PROBLEM_TYPES.keyLocked);

    expect(
      retries.events.map(({ attempt, reason, status, delayMs }) => [attempt, reason, status, delayMs]),
    ).toEqual([
      [1, "timeout", undefined, 50],
      [2, "status", 409, 1_000],
      [3, "status", 409, 1_000],
      [4, "status", 409, 1_000],
    ]);
    expect(retries.events.slice(1).map((event) => event.problem?.type)).toEqual(
      Array(3).fill(PROBLEM_TYPES.inProgress),
    );
    // Five requests reached the server, the last one after the lease ended; the handler started once.
    expect(server.keys).toEqual(Array(5).fill('"order-88"'));
    expect(server.executions()).toBe(1);
    expect(timeline(engine.events, start)).toEqual([
      ["claimed", 0],
      ["in-progress", 450, 1_050],
      ["in-progress", 1_450, 1_050],
      ["execution-limit", 1_500],
      ["in-progress", 2_450, 50],
      ["in-progress", 3_450, 0],
    ]);

    // A later call with the same key gets the same answer at once: nothing to wait for.
    const again = await idempotentFetch(`${server.url}/orders`, order("piano"), { key: "order-88" }).catch(
      (caught: unknown) => caught,
    );
    expect(again).toBeInstanceOf(IdempotencyKeyLockedError);
    expect((again as IdempotencyKeyLockedError).attempts).toBe(1);
    expect(server.executions()).toBe(1);
  });
});
