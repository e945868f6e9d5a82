/**
 * Cancelling and bounding an operation: the caller's AbortSignal, `deadlineMs` and `attemptTimeoutMs`. The
 * server is a Hono app with @idempotency/hono called in process (`app.fetch`, no socket), so vitest's fake
 * timers can drive the client's own timers and its default sleep; the in-flight abort also runs over a real
 * socket against Express.
 */
import { createServer } from "node:http";
import { MemoryStore } from "@idempotency/core";
import { idempotency } from "@idempotency/hono";
import { Hono } from "hono";
import { afterEach, describe, expect, it, vi } from "vitest";
import { IdempotentFetchGaveUpError, idempotentFetch, type RetryEvent } from "../src/index.js";
import { deferred, fakeClock, listen, ordersServer, type Running, T0 } from "./support.js";

const open: Running[] = [];
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(open.splice(0).map((running) => running.close()));
});

/** A Hono orders API in process; `hangFirst`: the first handler never answers (it runs on, as a stuck one does). */
function honoOrders(settings: { hangFirst?: boolean; failTimes?: number } = {}) {
  const now = () => T0;
  const app = new Hono();
  let executions = 0;
  let requests = 0;
  const started = deferred();
  app.use(async (_c, next) => {
    requests++;
    await next();
  });
  app.post(
    "/orders",
    idempotency({ store: new MemoryStore({ now }), scope: "global", now, leaseMs: 2_000 }),
    async (c) => {
      const id = ++executions;
      started.resolve();
      if (settings.hangFirst && id === 1) await new Promise(() => {});
      return c.json({ id }, 201);
    },
  );
  let failures = settings.failTimes ?? 0;
  app.get("/report", (c) => {
    if (failures-- > 0) return c.text("busy", 503);
    return c.text("report");
  });
  app.get("/stuck-once", async (c) => {
    if (requests === 1) await new Promise(() => {});
    return c.text("finally");
  });
  return {
    fetch: async (request: Request) => app.fetch(request),
    executions: () => executions,
    requests: () => requests,
    started: started.promise,
  };
}

const post: RequestInit = { method: "POST", headers: { "content-type": "application/json" }, body: "{}" };

describe("AbortSignal", () => {
  it("an already aborted signal rejects with its reason and sends nothing", async () => {
    const server = honoOrders();
    const reason = new Error("user left");
    const error = await idempotentFetch(
      "http://api.test/orders",
      { ...post, signal: AbortSignal.abort(reason) },
      { fetch: server.fetch },
    ).catch((caught: unknown) => caught);
    expect(error).toBe(reason);
    expect(server.requests()).toBe(0);
  });

  it("aborting while the client waits between attempts stops the wait (the default sleep's timer too)", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const server = honoOrders({ failTimes: 5 });
    const controller = new AbortController();
    const events: RetryEvent[] = [];
    const pending = idempotentFetch(
      "http://api.test/report",
      { signal: controller.signal },
      {
        fetch: server.fetch,
        random: () => 0.5,
        onRetry: (event) => events.push(event),
      },
    );
    const settled = pending.catch((caught: unknown) => caught);
    await vi.advanceTimersByTimeAsync(50); // the first wait (50 ms) ends: attempt 2
    expect(server.requests()).toBe(2);
    expect(events.map((event) => event.delayMs)).toEqual([50, 100]);
    expect(vi.getTimerCount()).toBe(1); // the second wait's timer
    controller.abort();
    const error = await settled;
    expect(error).toBeInstanceOf(DOMException);
    expect((error as DOMException).name).toBe("AbortError");
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.requests()).toBe(2);
  });

  it("the default sleep waits exactly the delay: Retry-After: 2 means no retry before 2 000 ms", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    let calls = 0;
    const fetch = async () =>
      ++calls === 1
        ? new Response(null, { status: 503, headers: { "retry-after": "2" } })
        : new Response("ok");
    const pending = idempotentFetch("http://api.test/orders", post, { fetch });
    await vi.advanceTimersByTimeAsync(1_999);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(2);
    expect((await pending).status).toBe(200);
  });

  it("aborting an attempt in flight rejects with the reason at once; nothing is retried", async () => {
    const gate = deferred();
    const server = await ordersServer({ gate: gate.promise });
    open.push(server);
    const controller = new AbortController();
    const reason = new Error("navigated away");
    const pending = idempotentFetch(`${server.url}/orders`, {
      ...post,
      body: '{"item":"x"}',
      signal: controller.signal,
    });
    await server.started;
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
    gate.resolve();
    expect(server.keys).toHaveLength(1);
    expect(server.executions()).toBe(1);
  });

  it("aborting after the response arrived still aborts reading its body, as with fetch", async () => {
    const server = await listen(
      createServer((_req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("the first half"); // and never the rest
      }),
    );
    open.push(server);
    const controller = new AbortController();
    const response = await idempotentFetch(server.url, { signal: controller.signal });
    expect(response.status).toBe(200);
    const reading = response.text().catch((caught: unknown) => caught);
    controller.abort();
    expect((await reading) as DOMException).toMatchObject({ name: "AbortError" });
  });
});

describe("deadlineMs", () => {
  it("does not start a wait that would end after the deadline", async () => {
    const server = honoOrders({ failTimes: 10 });
    const clock = fakeClock();
    const error = (await idempotentFetch("http://api.test/report", undefined, {
      ...clock.options,
      fetch: server.fetch,
      random: () => 0.5,
      deadlineMs: 120,
    }).catch((caught: unknown) => caught)) as IdempotentFetchGaveUpError;
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    // 50 ms fits (50 < 120); 50 + 100 would end at 150, after the deadline.
    expect(clock.delays).toEqual([50]);
    expect([error.limit, error.reason, error.attempts, error.status]).toEqual([
      "deadlineMs",
      "status",
      2,
      503,
    ]);
    expect(error.message).toContain(
      "gave up after 2 attempts: waiting 100 ms more would pass the deadline (deadlineMs: 120)",
    );
    expect(server.requests()).toBe(2);
  });

  it("holds when a wait ends late: no attempt after the deadline, and the last response is kept", async () => {
    const server = honoOrders({ failTimes: 10 });
    let time = T0;
    const error = (await idempotentFetch("http://api.test/report", undefined, {
      fetch: server.fetch,
      random: () => 0.5,
      deadlineMs: 500,
      now: () => time,
      sleep: async (ms) => {
        time += ms + 1_000; // a timer that fires a second late (a suspended laptop, a busy event loop)
      },
    }).catch((caught: unknown) => caught)) as IdempotentFetchGaveUpError;
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    expect([error.limit, error.reason, error.attempts, error.status]).toEqual([
      "deadlineMs",
      "status",
      1,
      503,
    ]);
    expect(error.message).toContain("gave up after 1 attempt: the deadline passed (deadlineMs: 500)");
    expect(await error.response!.text()).toBe("busy");
    expect(server.requests()).toBe(1);
  });

  it("aborts an attempt still running when the deadline passes", async () => {
    // Date too: the deadline is measured with Date.now, and must not move while the test sets things up.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const server = honoOrders({ hangFirst: true });
    const pending = idempotentFetch("http://api.test/orders", post, {
      fetch: server.fetch,
      deadlineMs: 5_000,
      attemptTimeoutMs: 30_000,
    });
    const settled = pending.catch((caught: unknown) => caught);
    await server.started;
    await vi.advanceTimersByTimeAsync(4_999);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    const error = (await settled) as IdempotentFetchGaveUpError;
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    expect([error.limit, error.reason, error.attempts]).toEqual(["deadlineMs", "timeout", 1]);
    expect((error.cause as DOMException).name).toBe("TimeoutError");
    expect(error.message).toContain(
      "gave up after 1 attempt: the deadline passed (deadlineMs: 5000); the last attempt had no response yet.",
    );
    expect(server.requests()).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("attemptTimeoutMs", () => {
  it("an attempt with no response in time is abandoned and retried as a timeout", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const server = honoOrders();
    const events: RetryEvent[] = [];
    const pending = idempotentFetch("http://api.test/stuck-once", undefined, {
      fetch: server.fetch,
      attemptTimeoutMs: 1_000,
      random: () => 0.5,
      onRetry: (event) => events.push(event),
    });
    await vi.advanceTimersByTimeAsync(1_000); // attempt 1 times out, the 50 ms wait starts
    expect(events.map(({ attempt, reason, delayMs }) => ({ attempt, reason, delayMs }))).toEqual([
      { attempt: 1, reason: "timeout", delayMs: 50 },
    ]);
    expect((events[0]!.error as DOMException).name).toBe("TimeoutError");
    await vi.advanceTimersByTimeAsync(50);
    const response = await pending;
    expect([response.status, response.attempts, await response.text()]).toEqual([200, 2, "finally"]);
  });

  it("a POST whose first attempt is stuck: timeout, then 409 while it runs on, then give up without a second execution", async () => {
    const server = honoOrders({ hangFirst: true });
    const clock = fakeClock();
    const events: RetryEvent[] = [];
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const pending = idempotentFetch("http://api.test/orders", post, {
      ...clock.options,
      fetch: server.fetch,
      attemptTimeoutMs: 1_000,
      maxAttempts: 3,
      random: () => 0.5,
      onRetry: (event) => events.push(event),
    });
    const settled = pending.catch((caught: unknown) => caught);
    await server.started;
    await vi.advanceTimersByTimeAsync(1_000);
    const error = (await settled) as IdempotentFetchGaveUpError;
    expect(events.map((event) => [event.reason, event.status, event.delayMs])).toEqual([
      ["timeout", undefined, 50],
      ["status", 409, 1_000], // the server's hint (retryAfterMs, 1 s), though its frozen lease has 2 s left
    ]);
    expect(error.name).toBe("IdempotencyInProgressError");
    expect([error.limit, error.attempts, error.status]).toEqual(["maxAttempts", 3, 409]);
    expect(server.executions()).toBe(1);
  });
});
