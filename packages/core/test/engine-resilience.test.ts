import { describe, expect, it, vi } from "vitest";
import {
  createIdempotency,
  declareNotStarted,
  decodeResponse,
  executionSignal,
  type IdempotencyOptions,
  IdempotencyRequestAbortedError,
  IdempotencyRequestTooLargeError,
  PROBLEM_TYPES,
} from "../src/index.js";
import { type Handler, neutralRequest, send } from "./harness.js";
import { deferred, events, eventTypes, type InstrumentedStore, store, useEngineFixture } from "./support.js";

const LEASE = 3_000;

const engine = useEngineFixture({ leaseMs: LEASE });

function counted(respond: Handler) {
  const handler = Object.assign(
    async (...args: Parameters<Handler>) => {
      handler.runs++;
      await respond(...args);
    },
    { runs: 0 },
  );
  return handler;
}

const created = () =>
  counted(async (res) => {
    res.writeHead(201, { "content-type": "text/plain", location: "/orders/1" });
    await res.end("created");
  });

describe("storeTimeoutMs", () => {
  it("answers 503 once begin has not answered within storeTimeoutMs, without running the handler", async () => {
    const idempotency = engine({ storeTimeoutMs: 500 });
    store.hanging.add("begin");
    const handler = created();
    const exchange = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(499);
    expect(events).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    const { response } = await exchange;
    expect(response.status).toBe(503);
    expect(response.headers["retry-after"]).toBe("1");
    expect((response.json() as { type: string }).type).toBe(PROBLEM_TYPES.storeUnavailable);
    expect(handler.runs).toBe(0);
    const event = events[0];
    expect(event).toMatchObject({ type: "store-error", operation: "begin", elapsedMs: 500 });
    expect(event?.type === "store-error" && event.error.message).toBe(
      "Store begin did not answer within 500 ms (storeTimeoutMs); treated as failed.",
    );
  });

  it("hands its storeTimeoutMs to every store call, so a store can refuse to apply a call it gave up on", async () => {
    const idempotency = engine({ storeTimeoutMs: 700 });
    const gate = deferred();
    const exchange = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      res.writeHead(201);
      await res.end("done");
    });
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    gate.resolve();
    await exchange;
    const released = send(idempotency, { key: "k2" }, async (res) => {
      res.writeHead(500);
      await res.end();
    });
    await released;
    expect(store.log.map((call) => call.operation)).toEqual([
      "begin",
      "extend",
      "complete",
      "begin",
      "release",
    ]);
    for (const call of store.log) expect(call.options).toEqual({ timeoutMs: 700 });
  });

  it("defaults to 2 s, or a third of a shorter lease", () => {
    expect(engine({ leaseMs: 30_000 }).options.storeTimeoutMs).toBe(2_000);
    expect(engine({ leaseMs: 3_000 }).options.storeTimeoutMs).toBe(1_000);
  });

  it("treats a store that throws synchronously like one that rejects", async () => {
    const idempotency = createIdempotency({
      store: Object.assign(Object.create(store) as InstrumentedStore, {
        begin: () => {
          throw new Error("socket closed");
        },
      }),
      scope: "global",
      onEvent: (event) => events.push(event),
    });
    const { response } = await send(idempotency, { key: "k" }, created());
    expect(response.status).toBe(503);
    expect(events[0]?.type === "store-error" && events[0].error.message).toBe(
      "Store begin failed: socket closed",
    );
  });

  it("a hanging extend counts as a failed renewal, and renewal goes on", async () => {
    const idempotency = engine({ storeTimeoutMs: 200 });
    const gate = deferred();
    const exchange = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      res.writeHead(201);
      await res.end("done");
    });
    await vi.advanceTimersByTimeAsync(0);
    store.hanging.add("extend");
    await vi.advanceTimersByTimeAsync(LEASE / 3 + 200);
    expect(eventTypes()).toEqual(["claimed", "store-error"]);
    store.hanging.delete("extend");
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    expect(store.calls.extend).toBe(2);
    gate.resolve();
    expect((await exchange).response.status).toBe(201);
    expect(eventTypes()).toEqual(["claimed", "store-error", "completed"]);
  });
});

describe("failOpen", () => {
  it("runs the handler unprotected and emits fail-open when the store is down", async () => {
    const idempotency = engine({ failOpen: true });
    store.down = true;
    const handler = created();
    const first = await send(idempotency, { key: "k" }, handler);
    const second = await send(idempotency, { key: "k" }, handler);
    expect([first.action, second.action]).toEqual(["pass", "pass"]);
    expect([first.response.status, second.response.status]).toEqual([201, 201]);
    expect(handler.runs).toBe(2);
    expect(eventTypes()).toEqual(["fail-open", "fail-open"]);
    const event = events[0];
    expect(event?.type === "fail-open" && event.error.code).toBe("ERR_IDEMPOTENCY_STORE");
  });

  it("fails open on a begin timeout too", async () => {
    const idempotency = engine({ failOpen: true, storeTimeoutMs: 100 });
    store.hanging.add("begin");
    const handler = created();
    const exchange = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(100);
    expect((await exchange).response.status).toBe(201);
    expect(handler.runs).toBe(1);
    expect(eventTypes()).toEqual(["fail-open"]);
  });

  it("still protects requests while the store answers", async () => {
    const idempotency = engine({ failOpen: true });
    const handler = created();
    await send(idempotency, { key: "k" }, handler);
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
    expect(handler.runs).toBe(1);
  });
});

describe("complete retries", () => {
  it("retries a failed complete and stores the response, so the retry replays", async () => {
    const idempotency = engine();
    store.failures.complete = 2;
    const handler = created();
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(300);
    expect((await first).response.text()).toBe("created");
    expect(store.calls.complete).toBe(3);
    expect(eventTypes()).toEqual(["claimed", "completed"]);
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.status).toBe(201);
    expect(retry.response.text()).toBe("created");
    expect(handler.runs).toBe(1);
  });

  it("holds the end of the response until complete has succeeded", async () => {
    const idempotency = engine();
    store.failures.complete = 1;
    const timeline: string[] = [];
    const first = send(idempotency, { key: "k" }, created(), timeline);
    await vi.advanceTimersByTimeAsync(99);
    expect(timeline).not.toContain("client:end");
    await vi.advanceTimersByTimeAsync(1);
    await first;
    expect(timeline.at(-1)).toBe("client:end");
    expect(store.calls.complete).toBe(2);
  });

  it("recognises a timed-out complete that was applied after all", async () => {
    // The first complete is applied by the store, but its answer never arrives.
    const complete = store.complete.bind(store);
    let attempts = 0;
    store.complete = async (...args) => {
      attempts++;
      const applied = await complete(...args);
      return attempts === 1 ? new Promise<boolean>(() => {}) : applied;
    };
    const idempotency = engine({ storeTimeoutMs: 200 });
    const first = send(idempotency, { key: "k" }, created());
    await vi.advanceTimersByTimeAsync(200 + 100);
    expect((await first).response.status).toBe(201);
    expect(attempts).toBe(2);
    expect(eventTypes()).toEqual(["claimed", "completed"]);
  });

  it("after the last failed attempt the key is free again once the lease expires (the documented window)", async () => {
    const idempotency = engine();
    store.failures.complete = 3;
    const handler = created();
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(300);
    expect((await first).response.status).toBe(201);
    expect(eventTypes()).toEqual(["claimed", "store-error"]);
    const during = await send(idempotency, { key: "k" }, handler);
    expect(during.response.status).toBe(409);
    await vi.advanceTimersByTimeAsync(LEASE);
    const after = await send(idempotency, { key: "k" }, handler);
    expect(after.response.status).toBe(201);
    expect(after.response.headers["idempotent-replayed"]).toBeUndefined();
    expect(handler.runs).toBe(2);
  });
});

describe("waitMs", () => {
  it("replays the first request's response when it completes within waitMs", async () => {
    const idempotency = engine({ waitMs: 2_000 });
    const gate = deferred();
    const handler = counted(async (res) => {
      await gate.promise;
      res.writeHead(201, { "content-type": "text/plain" });
      await res.end("first");
    });
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(0);
    const duplicate = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(500);
    gate.resolve();
    await vi.advanceTimersByTimeAsync(1_000);
    const [a, b] = await Promise.all([first, duplicate]);
    expect(a.response.text()).toBe("first");
    expect(b.response.status).toBe(201);
    expect(b.response.text()).toBe("first");
    expect(b.response.headers["idempotent-replayed"]).toBe("true");
    expect(handler.runs).toBe(1);
  });

  it("polls with doubling backoff: after 25, 50, 100, 200 ms ... capped at 1 s", async () => {
    const idempotency = engine({ waitMs: 5_000, leaseMs: 30_000 });
    const gate = deferred();
    const first = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      await res.end("x");
    });
    await vi.advanceTimersByTimeAsync(0);
    const begins = store.calls.begin;
    const duplicate = send(idempotency, { key: "k" }, async () => {});
    const polls: number[] = [];
    for (const step of [0, 25, 50, 100, 200, 400, 800, 1_000, 1_000]) {
      await vi.advanceTimersByTimeAsync(step);
      polls.push(store.calls.begin - begins);
    }
    expect(polls).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    gate.resolve();
    await vi.advanceTimersByTimeAsync(1_000);
    await first;
    expect((await duplicate).response.text()).toBe("x");
  });

  it("claims and runs when the first was released meanwhile (a legitimate retry)", async () => {
    const idempotency = engine({ waitMs: 2_000 });
    const gate = deferred();
    let run = 0;
    const handler = counted(async (res) => {
      run++;
      if (run === 1) {
        await gate.promise;
        res.writeHead(500);
        await res.end("failed");
        return;
      }
      res.writeHead(201);
      await res.end("second run");
    });
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(0);
    const duplicate = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(100);
    gate.resolve();
    await vi.advanceTimersByTimeAsync(500);
    expect((await first).response.status).toBe(500);
    const waited = await duplicate;
    expect(waited.response.status).toBe(201);
    expect(waited.response.text()).toBe("second run");
    expect(handler.runs).toBe(2);
    expect(eventTypes()).toEqual(["claimed", "released", "claimed", "completed"]);
  });

  it("answers 409 when the first is still running after waitMs, reporting how long it waited", async () => {
    const idempotency = engine({ waitMs: 1_000, leaseMs: 30_000 });
    const gate = deferred();
    const first = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      await res.end("x");
    });
    await vi.advanceTimersByTimeAsync(0);
    const duplicate = send(idempotency, { key: "k" }, async () => {});
    await vi.advanceTimersByTimeAsync(1_000);
    const { response } = await duplicate;
    expect(response.status).toBe(409);
    expect(response.headers["retry-after"]).toBe("1");
    expect(events.at(-1)).toMatchObject({ type: "in-progress", waitedMs: 1_000, leaseRemainingMs: 29_000 });
    gate.resolve();
    await first;
  });

  it("answers 422 at once to a different body, without waiting", async () => {
    const idempotency = engine({ waitMs: 5_000 });
    const gate = deferred();
    const first = send(idempotency, { key: "k", body: "a" }, async (res) => {
      await gate.promise;
      await res.end("x");
    });
    await vi.advanceTimersByTimeAsync(0);
    const { response } = await send(idempotency, { key: "k", body: "b" }, async () => {});
    expect(response.status).toBe(422);
    gate.resolve();
    await first;
  });

  it("takes over a crashed request whose lease expires during the wait", async () => {
    const idempotency = engine({ waitMs: 5_000 });
    const crashed = send(idempotency, { key: "k" }, async (_res, context) => {
      context.stall(); // the process "dies": renewal stops and no response ever comes
      context.disconnect();
      await new Promise(() => {});
    });
    void crashed;
    await vi.advanceTimersByTimeAsync(0);
    const handler = created();
    const waiter = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(LEASE + 1);
    expect((await waiter).response.status).toBe(201);
    expect(handler.runs).toBe(1);
    expect(events.filter((event) => event.type === "claimed").map((event) => event.takeover)).toEqual([
      false,
      true,
    ]);
  });
});

describe("maxResponseBytes", () => {
  it("delivers a larger response in full, completes it without a body, and answers retries 410", async () => {
    const idempotency = engine({ maxResponseBytes: 1_000 });
    const body = Buffer.alloc(1_001, 7);
    const handler = counted(async (res) => {
      res.writeHead(201, { "content-type": "application/octet-stream", location: "/exports/9" });
      await res.end(body);
    });
    const first = await send(idempotency, { key: "k" }, handler);
    expect(first.response.body.equals(body)).toBe(true);
    expect(events.at(-1)).toMatchObject({ type: "completed", bodyBytes: 1_001, bodyStored: false });
    const record = await store.inner.get(events[0]?.key ?? "");
    expect(record?.state === "completed" && decodeResponse(record.response as Uint8Array)).toEqual({
      status: 201,
      headers: [
        ["content-type", "application/octet-stream"],
        ["location", "/exports/9"],
      ],
      body: null,
    });
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.status).toBe(410);
    expect(retry.response.headers.location).toBe("/exports/9");
    expect(retry.response.json()).toMatchObject({ type: PROBLEM_TYPES.responseNotStored, status: 410 });
    expect(handler.runs).toBe(1);
  });

  it("stores a response of exactly maxResponseBytes", async () => {
    const idempotency = engine({ maxResponseBytes: 1_000 });
    const body = Buffer.alloc(1_000, 1);
    const handler = counted(async (res) => {
      await res.end(body);
    });
    await send(idempotency, { key: "k" }, handler);
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.status).toBe(200);
    expect(retry.response.body.equals(body)).toBe(true);
  });

  it("counts a streamed response chunk by chunk and streams every chunk to the first client", async () => {
    const idempotency = engine({ maxResponseBytes: 250 });
    const handler = counted(async (res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      for (let i = 0; i < 3; i++) res.write("x".repeat(100));
      await res.end();
    });
    const timeline: string[] = [];
    const first = await send(idempotency, { key: "k" }, handler, timeline);
    expect(first.response.text()).toBe("x".repeat(300));
    expect(timeline.filter((entry) => entry === "client:data 100")).toHaveLength(3);
    expect(events.at(-1)).toMatchObject({ type: "completed", bodyBytes: 300, bodyStored: false });
    expect((await send(idempotency, { key: "k" }, handler)).response.status).toBe(410);
  });

  it("knows from a Content-Length above the cap that the body will not be kept", async () => {
    const idempotency = engine({ maxResponseBytes: 10 });
    const handler = counted(async (res) => {
      res.writeHead(200, { "content-length": "20" });
      res.write("0123456789");
      await res.end("0123456789");
    });
    const first = await send(idempotency, { key: "k" }, handler);
    expect(first.response.text()).toBe("01234567890123456789");
    expect(events.at(-1)).toMatchObject({ type: "completed", bodyBytes: 20, bodyStored: false });
  });

  it("with 0 stores no body at all, but still never runs twice", async () => {
    const idempotency = engine({ maxResponseBytes: 0 });
    const handler = created();
    await send(idempotency, { key: "k" }, handler);
    expect((await send(idempotency, { key: "k" }, handler)).response.status).toBe(410);
    expect(handler.runs).toBe(1);
  });
});

describe("replayHeaders", () => {
  const withHeaders = () =>
    counted(async (res) => {
      res.writeHead(201, {
        "set-cookie": ["a=1", "b=2"],
        "www-authenticate": "Bearer",
        "x-request-id": "r-1",
        "x-trace": "t-1",
        "content-type": "text/plain",
      });
      await res.end("ok");
    });

  async function replayedHeaders(options: Partial<IdempotencyOptions>) {
    const idempotency = engine(options);
    const handler = withHeaders();
    await send(idempotency, { key: "k" }, handler);
    return (await send(idempotency, { key: "k" }, handler)).response.headers;
  }

  it("by default replays everything but the credential headers", async () => {
    expect(await replayedHeaders({})).toEqual({
      "x-request-id": "r-1",
      "x-trace": "t-1",
      "content-type": "text/plain",
      "idempotent-replayed": "true",
      "content-length": "2",
    });
  });

  it("allow re-admits a header the defaults drop, every value of it", async () => {
    const headers = await replayedHeaders({ replayHeaders: { allow: ["Set-Cookie"] } });
    expect(headers["set-cookie"]).toBe("a=1, b=2");
    expect(headers["www-authenticate"]).toBeUndefined();
  });

  it("deny drops more headers on top of the defaults", async () => {
    const headers = await replayedHeaders({ replayHeaders: { deny: ["X-Request-Id", "x-trace"] } });
    expect(Object.keys(headers).sort()).toEqual(["content-length", "content-type", "idempotent-replayed"]);
  });

  it("deny wins over allow for the same header", async () => {
    const headers = await replayedHeaders({ replayHeaders: { allow: ["set-cookie"], deny: ["set-cookie"] } });
    expect(headers["set-cookie"]).toBeUndefined();
  });
});

describe("maxRequestBytes", () => {
  it("answers 413 problem+json to a declared Content-Length above the limit, without reading the body", async () => {
    const idempotency = engine({ maxRequestBytes: 10 });
    const handler = created();
    const request = neutralRequest({ key: "k", body: "x".repeat(11), headers: { "content-length": "11" } });
    const decision = await idempotency.handle(request);
    expect(decision.action).toBe("respond");
    if (decision.action !== "respond") return;
    expect(decision.response.status).toBe(413);
    expect(JSON.parse(Buffer.from(decision.response.body).toString())).toEqual({
      type: PROBLEM_TYPES.requestTooLarge,
      title: "Request too large",
      status: 413,
      detail:
        "Requests with an Idempotency-Key may carry at most 10 bytes of body here; this one carries more. " +
        "Send a smaller body, or ask the service to raise its limit.",
    });
    expect(request.bodyReads).toBe(0);
    expect(handler.runs).toBe(0);
    expect(store.totalCalls).toBe(0);
  });

  it("passes the limit to the binding's reader, and refuses a longer body it returns anyway", async () => {
    const idempotency = engine({ maxRequestBytes: 10 });
    const limits: Array<number | undefined> = [];
    const request = neutralRequest({ key: "k", body: "x".repeat(11) });
    const read = request.body;
    request.body = (maxBytes?: number) => {
      limits.push(maxBytes);
      return read(maxBytes);
    };
    const decision = await idempotency.handle(request);
    expect(limits).toEqual([10]);
    expect(decision.action === "respond" && decision.response.status).toBe(413);
    expect(store.totalCalls).toBe(0);
  });

  it("turns a reader's IdempotencyRequestTooLargeError into 413", async () => {
    const idempotency = engine({ maxRequestBytes: 4 });
    const request = neutralRequest({ key: "k" });
    request.body = async (maxBytes?: number) => {
      throw new IdempotencyRequestTooLargeError(maxBytes ?? 0);
    };
    const decision = await idempotency.handle(request);
    expect(decision.action === "respond" && decision.response.status).toBe(413);
  });

  it("accepts a body of exactly the limit, and never reads the body with fingerprint: false", async () => {
    const exact = await send(engine({ maxRequestBytes: 10 }), { key: "k", body: "x".repeat(10) }, created());
    expect(exact.response.status).toBe(201);
    const request = neutralRequest({ key: "k2", body: "x".repeat(100) });
    const decision = await engine({ maxRequestBytes: 10, fingerprint: false }).handle(request);
    expect(decision.action).toBe("execute");
    expect(request.bodyReads).toBe(0);
    if (decision.action === "execute") await decision.execution.abandon();
  });

  it("bounds the body a custom fingerprint or scope function reads: 413, unless it asks for more on purpose", async () => {
    const limits: Array<number | undefined> = [];
    const spy = (request: ReturnType<typeof neutralRequest>) => {
      const read = request.body;
      request.body = (maxBytes?: number) => {
        limits.push(maxBytes);
        return read(maxBytes);
      };
      return request;
    };
    const hashBody = engine({
      maxRequestBytes: 10,
      fingerprint: async (request) => Buffer.from(await request.body()).toString("hex"),
    });
    const chunked = spy(neutralRequest({ key: "k1", body: "x".repeat(11) }));
    const decision = await hashBody.handle(chunked);
    expect(decision.action === "respond" && decision.response.status).toBe(413);
    expect(limits).toEqual([10]);
    const declared = neutralRequest({ key: "k2", body: "x".repeat(11), headers: { "content-length": "11" } });
    expect((await hashBody.handle(declared)).action).toBe("respond");
    expect(declared.bodyReads).toBe(0);

    const scopeFromBody = engine({
      maxRequestBytes: 10,
      scope: async (request) =>
        Buffer.from(await request.body())
          .toString()
          .slice(0, 3),
    });
    const big = await scopeFromBody.handle(neutralRequest({ key: "k3", body: "x".repeat(11) }));
    expect(big.action === "respond" && big.response.status).toBe(413);

    const onPurpose = engine({
      maxRequestBytes: 10,
      fingerprint: async (request) => String((await request.body(1_000)).length),
    });
    const larger = await onPurpose.handle(neutralRequest({ key: "k4", body: "x".repeat(11) }));
    expect(larger.action).toBe("execute");
    if (larger.action === "execute") await larger.execution.abandon();
    expect(store.calls.begin).toBe(1);
  });
});

describe("executionSignal", () => {
  it("hands out the claim's signal for the framework request, aborted once the lease is lost", async () => {
    const idempotency = engine();
    const request = neutralRequest({ key: "k" });
    expect(executionSignal(request.native)).toBeUndefined();
    const decision = await idempotency.handle(request);
    if (decision.action !== "execute") throw new Error("expected a claim");
    const signal = executionSignal(request.native);
    expect(signal).toBe(decision.execution.signal);
    expect(signal?.aborted).toBe(false);
    await store.inner.delete(events[0]?.key ?? "");
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toMatchObject({ code: "ERR_IDEMPOTENCY_LEASE_LOST" });
    expect(executionSignal(undefined)).toBeUndefined();
    expect(executionSignal("req")).toBeUndefined();
  });
});

describe("declareNotStarted", () => {
  it("releases the claim of the framework request it is given, whatever the status", async () => {
    const idempotency = engine();
    const request = neutralRequest({ key: "k" });
    const decision = await idempotency.handle(request);
    if (decision.action !== "execute") throw new Error("expected a claim");
    declareNotStarted(request.native);
    decision.execution.start(201, {});
    await decision.execution.end(Buffer.from("validated nothing"));
    expect(eventTypes()).toEqual(["claimed", "not-started"]);
    expect((await idempotency.handle(neutralRequest({ key: "k" }))).action).toBe("execute");
  });

  it("does nothing for a request no engine claimed, or a native that is not an object", () => {
    expect(() => declareNotStarted({})).not.toThrow();
    expect(() => declareNotStarted(undefined)).not.toThrow();
    expect(() => declareNotStarted("req")).not.toThrow();
  });
});

describe("mounted twice", () => {
  it("passes a request through an engine when one already claimed the same framework request", async () => {
    const outer = engine();
    const inner = engine({ methods: ["POST", "PUT"] });
    const request = neutralRequest({ key: "k" });
    const first = await outer.handle(request);
    expect(first.action).toBe("execute");
    expect((await inner.handle(request)).action).toBe("pass");
    expect(store.calls.begin).toBe(1);
    if (first.action === "execute") await first.execution.end(new Uint8Array([1]));
  });

  it("does not pass a request that an earlier engine let through unclaimed", async () => {
    const outer = engine({ methods: ["POST"] });
    const inner = engine({ methods: ["PUT"] });
    const request = neutralRequest({ key: "k", method: "PUT" });
    expect((await outer.handle(request)).action).toBe("pass");
    const decision = await inner.handle(request);
    expect(decision.action).toBe("execute");
    if (decision.action === "execute") await decision.execution.abandon();
  });
});

describe("bodyless replays", () => {
  it("replays a 204 without Content-Length (RFC 9110 forbids it there)", async () => {
    const idempotency = engine();
    const handler = counted(async (res) => {
      res.writeHead(204, { "x-done": "yes" });
      await res.end();
    });
    await send(idempotency, { key: "k" }, handler);
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.status).toBe(204);
    expect(retry.response.headers).toEqual({ "x-done": "yes", "idempotent-replayed": "true" });
  });
});

describe("a new head before any byte went out", () => {
  it("replaces the response begun so far, so what is stored is what the client gets", async () => {
    const idempotency = engine();
    const decision = await idempotency.handle(neutralRequest({ key: "k" }));
    if (decision.action !== "execute") throw new Error("expected a claim");
    const { execution } = decision;
    // The handler declares one byte and writes it: held back, nothing sent yet. Then it throws, and the
    // framework's error handler answers 500 instead.
    execution.start(201, { "content-length": "1" });
    expect(execution.write(Buffer.from("x")).length).toBe(0);
    execution.start(500, { "content-type": "text/plain", "content-length": "5" });
    const rest = await execution.end(Buffer.from("oops!"));
    expect(Buffer.from(rest).toString()).toBe("oops!");
    expect(events.at(-1)).toMatchObject({ type: "released", status: 500 });
  });

  it("is ignored once bytes were handed back to send", async () => {
    const idempotency = engine();
    const decision = await idempotency.handle(neutralRequest({ key: "k" }));
    if (decision.action !== "execute") throw new Error("expected a claim");
    const { execution } = decision;
    execution.start(201, { "content-type": "text/plain" });
    expect(Buffer.from(execution.write(Buffer.from("part"))).toString()).toBe("part");
    execution.start(500, {});
    await execution.end(Buffer.from(" two"));
    expect(events.at(-1)).toMatchObject({ type: "completed", status: 201, bodyBytes: 8 });
    const replay = await send(idempotency, { key: "k" }, created());
    expect([replay.response.status, replay.response.text()]).toEqual([201, "part two"]);
  });
});

describe("a client that leaves mid-body", () => {
  it("answers 400 request-aborted when the body ends early: nothing is claimed or run", async () => {
    const idempotency = engine();
    const handler = created();
    const request = neutralRequest({ key: "k", body: "{}" });
    request.body = () => Promise.reject(new IdempotencyRequestAbortedError({ cause: "closed" }));
    const decision = await idempotency.handle(request);
    expect(decision.action).toBe("respond");
    if (decision.action !== "respond") return;
    expect(decision.response.status).toBe(400);
    expect(JSON.parse(Buffer.from(decision.response.body).toString())).toEqual({
      type: PROBLEM_TYPES.requestAborted,
      title: "Request aborted",
      status: 400,
      detail:
        "The request ended before its body was complete, so it was not processed. Send it again with the same " +
        "key and the whole body.",
    });
    expect(handler.runs).toBe(0);
    expect(store.totalCalls).toBe(0);
    const retry = await send(idempotency, { key: "k", body: "{}" }, handler);
    expect(retry.response.status).toBe(201);
    expect(handler.runs).toBe(1);
  });

  it("releases an error answered after its claim (reason request-aborted), and stores a success as usual", async () => {
    const idempotency = engine({ fingerprint: false });
    const aborted = (status: number) =>
      counted(async (res, context) => {
        context.requestAborted();
        res.writeHead(status, { "content-type": "text/plain" });
        await res.end(status === 400 ? "request aborted" : "created");
      });
    const failing = aborted(400);
    const first = await send(idempotency, { key: "k" }, failing);
    expect(first.response.status).toBe(400);
    expect(events.at(-1)).toMatchObject({ type: "released", status: 400, reason: "request-aborted" });
    expect(store.calls.complete).toBe(0);
    const succeeding = aborted(201);
    const second = await send(idempotency, { key: "k" }, succeeding);
    expect(second.response.status).toBe(201);
    expect(eventTypes().at(-1)).toBe("completed");
    const replay = await send(idempotency, { key: "k" }, succeeding);
    expect(replay.response.headers["idempotent-replayed"]).toBe("true");
    expect(failing.runs + succeeding.runs).toBe(2);
  });
});
