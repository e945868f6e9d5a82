/**
 * The client against a real server: Express with @idempotency/express on a MemoryStore, on a loopback port,
 * reached through a TCP proxy that loses connections. Waits between attempts run on an injected clock.
 */
import { MemoryStore } from "@idempotency/core";
import { afterEach, describe, expect, it } from "vitest";
import {
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  IdempotentFetchGaveUpError,
  idempotentFetch,
  PROBLEM_TYPES,
  type RetryEvent,
} from "../src/index.js";
import { deferred, fakeClock, flakyProxy, ordersServer, type Running } from "./support.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const open: Running[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((running) => running.close()));
});
function track<T extends Running>(running: T): T {
  open.push(running);
  return running;
}

const order = (item: string): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ item }),
});

describe("lost connections", () => {
  it("a server whose first two responses are lost runs the side effect once; the client gets the original response", async () => {
    const server = track(await ordersServer());
    const proxy = track(await flakyProxy(server.port, ["lose-response", "lose-response"]));
    const clock = fakeClock();
    const events: RetryEvent[] = [];

    const response = await idempotentFetch(`${proxy.url}/orders`, order("book"), {
      ...clock.options,
      random: () => 0.5,
      onRetry: (event) => events.push(event),
    });

    expect(response.status).toBe(201);
    expect(response.headers.get("location")).toBe("/orders/1");
    expect(await response.json()).toEqual({ id: 1, item: "book" });
    expect(response.replayed).toBe(true);
    expect(response.attempts).toBe(3);
    expect(server.executions()).toBe(1);
    expect(proxy.connections()).toBe(3);

    // One key for the operation, an sf-string, on every attempt; the same body bytes every time.
    expect(response.idempotencyKey).toMatch(UUID);
    expect(server.keys).toEqual(Array(3).fill(`"${response.idempotencyKey}"`));
    expect(proxy.bodies.map(String)).toEqual(Array(3).fill('{"item":"book"}'));

    // Full jitter with random() = 0.5: half of 100·2^0, then half of 100·2^1.
    expect(clock.delays).toEqual([50, 100]);
    expect(
      events.map(({ attempt, delayMs, reason, status }) => ({ attempt, delayMs, reason, status })),
    ).toEqual([
      { attempt: 1, delayMs: 50, reason: "network", status: undefined },
      { attempt: 2, delayMs: 100, reason: "network", status: undefined },
    ]);
    expect(events[0]!.error).toBeInstanceOf(TypeError);
    expect(events[0]!.idempotencyKey).toBe(response.idempotencyKey);
    expect(events[0]!.method).toBe("POST");
    expect(events[0]!.url).toBe(`${proxy.url}/orders`);
  });

  it("409 then success: the retry of a lost request waits out Retry-After while the first still runs, then gets its result", async () => {
    const gate = deferred();
    const server = track(await ordersServer({ gate: gate.promise, engine: { leaseMs: 3_000 } }));
    const proxy = track(await flakyProxy(server.port, ["drop-after-request"]));
    const delays: number[] = [];
    const events: RetryEvent[] = [];

    const response = await idempotentFetch(`${proxy.url}/orders`, order("lamp"), {
      random: () => 0.5,
      onRetry: (event) => events.push(event),
      // The injected clock also paces the server: the first handler runs until the second wait.
      sleep: async (ms) => {
        delays.push(ms);
        if (delays.length === 1) await server.started;
        if (delays.length === 2) {
          gate.resolve();
          await server.finished;
        }
      },
    });

    expect(response.status).toBe(201);
    expect(await response.json()).toEqual({ id: 1, item: "lamp" });
    expect(response.replayed).toBe(true);
    expect(response.attempts).toBe(3);
    expect(server.executions()).toBe(1);
    // Retry-After is the server's retryAfterMs hint (1 s by default), not the 3 s left on its frozen lease.
    expect(delays).toEqual([50, 1_000]);
    expect(events.map((event) => [event.reason, event.status, event.retryAfterMs])).toEqual([
      ["network", undefined, undefined],
      ["status", 409, 1_000],
    ]);
    expect(events[1]!.problem).toMatchObject({
      type: PROBLEM_TYPES.inProgress,
      title: "Request in progress",
      status: 409,
      retryAfterMs: 1_000,
    });
  });

  it("a 409 whose Retry-After is longer than maxDelayMs gives up at once with IdempotencyInProgressError", async () => {
    const gate = deferred();
    // A server that hints 20 s (its retryAfterMs; the frozen lease has 30 s left): more than maxDelayMs.
    const server = track(await ordersServer({ gate: gate.promise, engine: { retryAfterMs: 20_000 } }));
    const proxy = track(await flakyProxy(server.port, ["drop-after-request"]));
    const clock = fakeClock();

    const error = await idempotentFetch(`${proxy.url}/orders`, order("desk"), {
      ...clock.options,
      random: () => 0,
      sleep: async (ms) => {
        clock.delays.push(ms);
        await server.started;
      },
    }).catch((caught: unknown) => caught);
    gate.resolve();

    expect(error).toBeInstanceOf(IdempotencyInProgressError);
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    const inProgress = error as IdempotencyInProgressError;
    expect(inProgress.code).toBe("ERR_IDEMPOTENCY_IN_PROGRESS");
    expect(inProgress.limit).toBe("maxDelayMs");
    expect(inProgress.reason).toBe("status");
    expect(inProgress.status).toBe(409);
    expect(inProgress.retryAfterMs).toBe(20_000);
    expect(inProgress.attempts).toBe(2);
    expect(inProgress.problem?.type).toBe(PROBLEM_TYPES.inProgress);
    expect(inProgress.idempotencyKey).toMatch(UUID);
    expect(inProgress.message).toContain("longer than maxDelayMs (10000)");
    expect(inProgress.message).toContain("retry later with the same key (after 20000 ms)");
    // The last response stays readable.
    expect((await inProgress.response!.json()).type).toBe(PROBLEM_TYPES.inProgress);
    expect(clock.delays).toEqual([0]);
    expect(server.executions()).toBe(1);
  });
});

describe("answers that are not retried", () => {
  it("a key reused for another request surfaces as IdempotencyKeyReusedError, without a retry", async () => {
    const server = track(await ordersServer());
    const url = `${server.url}/orders`;
    const first = await idempotentFetch(url, order("pen"), { key: "order-7" });
    expect(first.status).toBe(201);
    expect(first.replayed).toBe(false);
    expect(first.idempotencyKey).toBe("order-7");

    const error = await idempotentFetch(url, order("ink"), { key: "order-7" }).catch(
      (caught: unknown) => caught,
    );

    expect(error).toBeInstanceOf(IdempotencyKeyReusedError);
    const reused = error as IdempotencyKeyReusedError;
    expect(reused.code).toBe("ERR_IDEMPOTENCY_KEY_REUSED");
    expect(reused.idempotencyKey).toBe("order-7");
    expect(reused.attempts).toBe(1);
    expect(reused.problem).toMatchObject({
      type: PROBLEM_TYPES.keyReused,
      title: "Idempotency key reused",
      status: 422,
      retryAfterMs: undefined,
    });
    expect(reused.problem.detail).toContain("already used for a different request");
    expect(reused.response.status).toBe(422);
    expect((await reused.response.json()).type).toBe(PROBLEM_TYPES.keyReused);
    expect(server.keys).toEqual(['"order-7"', '"order-7"']);
    expect(server.executions()).toBe(1);
  });

  it("a 500 is returned as it is by default, and retried (running again) when retryOn lists it", async () => {
    const plain = track(await ordersServer({ failFirst: true }));
    const failed = await idempotentFetch(`${plain.url}/orders`, order("cup"), fakeClock().options);
    expect(failed.status).toBe(500);
    expect(failed.attempts).toBe(1);
    expect(await failed.json()).toEqual({ error: "the database went away" });

    const server = track(await ordersServer({ failFirst: true }));
    const clock = fakeClock();
    const response = await idempotentFetch(`${server.url}/orders`, order("cup"), {
      ...clock.options,
      random: () => 0.5,
      retryOn: [500, 503],
    });
    expect(response.status).toBe(201);
    expect(response.replayed).toBe(false);
    expect(response.attempts).toBe(2);
    // The 500 released the key, so the retry ran the handler again: that is why 500 is opt-in.
    expect(server.executions()).toBe(2);
    expect(clock.delays).toEqual([50]);
  });

  it("retries that run out on a problem response reject with its problem, status and Retry-After", async () => {
    class DownStore extends MemoryStore {
      override async begin(): Promise<never> {
        throw new Error("connection refused");
      }
    }
    const server = track(await ordersServer({ engine: { store: new DownStore() } }));
    const clock = fakeClock();

    const error = await idempotentFetch(`${server.url}/orders`, order("mug"), {
      ...clock.options,
      maxAttempts: 3,
    }).catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    expect(error).not.toBeInstanceOf(IdempotencyInProgressError);
    const gaveUp = error as IdempotentFetchGaveUpError;
    expect(gaveUp.code).toBe("ERR_IDEMPOTENT_FETCH_GAVE_UP");
    expect(gaveUp.limit).toBe("maxAttempts");
    expect(gaveUp.reason).toBe("status");
    expect(gaveUp.attempts).toBe(3);
    expect(gaveUp.status).toBe(503);
    expect(gaveUp.retryAfterMs).toBe(1_000);
    expect(gaveUp.problem).toMatchObject({
      type: PROBLEM_TYPES.storeUnavailable,
      title: "Idempotency store unavailable",
      status: 503,
      retryAfterMs: 1_000,
    });
    expect(gaveUp.message).toBe(
      `POST ${server.url}/orders: gave up after 3 attempts (maxAttempts: 3); the last attempt got 503 Idempotency ` +
        "store unavailable. The operation may or may not have run: retry later with the same key " +
        "(error.idempotencyKey) to get its result without running it twice.",
    );
    // Retry-After: 1 is honoured on each wait; one key throughout.
    expect(clock.delays).toEqual([1_000, 1_000]);
    expect(new Set(server.keys)).toEqual(new Set([`"${gaveUp.idempotencyKey}"`]));
    expect(server.executions()).toBe(0);
  });
});
