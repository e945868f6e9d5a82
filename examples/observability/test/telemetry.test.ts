import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type IdempotencyStore, MemoryStore } from "@idempotency/core";
import { context, type HrTime, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import type { RequestHandler } from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp, type Order } from "../src/app.js";
import { idempotencyTelemetry } from "../src/telemetry.js";
import { AsyncLocalStorageContextManager } from "./async-context.js";

// One fake clock for the engine, the store and the telemetry: every time below is exact. It moves only when
// the store is called (each operation takes a fixed time) and when the test jumps past a lease.
const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
let clock = T0;
const now = () => clock;
const LATENCY_MS = { begin: 2, complete: 5, extend: 1, release: 1, get: 1, delete: 1 } as const;
const LEASE_MS = 30_000; // the default

/** A MemoryStore on the fake clock whose calls take LATENCY_MS, and that can be switched down. */
class SlowStore implements IdempotencyStore {
  down = false;
  readonly #inner: IdempotencyStore = new MemoryStore({ now });
  #call<R>(operation: keyof typeof LATENCY_MS, call: () => Promise<R>): Promise<R> {
    clock += LATENCY_MS[operation];
    if (this.down) return Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:6379"));
    return call();
  }
  begin: IdempotencyStore["begin"] = (...a) => this.#call("begin", () => this.#inner.begin(...a));
  complete: IdempotencyStore["complete"] = (...a) => this.#call("complete", () => this.#inner.complete(...a));
  extend: IdempotencyStore["extend"] = (...a) => this.#call("extend", () => this.#inner.extend(...a));
  release: IdempotencyStore["release"] = (...a) => this.#call("release", () => this.#inner.release(...a));
  get: IdempotencyStore["get"] = (...a) => this.#call("get", () => this.#inner.get(...a));
  delete: IdempotencyStore["delete"] = (...a) => this.#call("delete", () => this.#inner.delete(...a));
}

class TestMetricReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

const contextManager = new AsyncLocalStorageContextManager();
const spans = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
const tracer = tracerProvider.getTracer("test");
const metricReader = new TestMetricReader();
const meterProvider = new MeterProvider({ readers: [metricReader] });
const lines: string[] = [];
const store = new SlowStore();

/** The HTTP server span that HTTP instrumentation would start, made active for the rest of the request. */
const serverSpan: RequestHandler = (req, res, next) => {
  const span = tracer.startSpan(`${req.method} ${req.path}`, { kind: SpanKind.SERVER, startTime: clock });
  res.on("finish", () => span.end(clock));
  context.with(trace.setSpan(context.active(), span), next);
};

// The first "slow" order waits for the test to let it finish: it is the one whose lease runs out.
let slowStarted: () => void = () => {};
const slowStartedOnce = new Promise<void>((resolve) => {
  slowStarted = resolve;
});
let finishSlow: () => void = () => {};
const slowMayFinish = new Promise<void>((resolve) => {
  finishSlow = resolve;
});
let slowOrders = 0;
const charge = async (order: Order) => {
  if (order.item !== "slow" || ++slowOrders > 1) return;
  slowStarted();
  await slowMayFinish;
};

const { app } = createApp({
  store,
  charge,
  before: [serverSpan],
  clock: now,
  tracer,
  meter: meterProvider.getMeter("test"),
  log: (line) => lines.push(line),
  now,
});
let server: Server;
let base = "";

const post = (key: string, body: object, token: string | null = "acme-token") =>
  fetch(`${base}/orders`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "idempotency-key": key,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });

/** Everything the session below answered, by step. */
const answers: Record<string, { status: number; replayed: string | null; body: string }> = {};
async function answer(step: string, response: Promise<Response>): Promise<void> {
  const r = await response;
  answers[step] = { status: r.status, replayed: r.headers.get("idempotent-replayed"), body: await r.text() };
}

beforeAll(async () => {
  context.setGlobalContextManager(contextManager.enable());
  server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  await answer("first", post("order-1", { item: "apple" })); // claimed, completed
  await answer("retry", post("order-1", { item: "apple" })); // replayed
  await answer("reused", post("order-1", { item: "pear" })); // key-reused
  const slow = answer("slow", post("order-2", { item: "slow" })); // claimed, then waits in charge()
  await slowStartedOnce;
  await answer("duplicate", post("order-2", { item: "slow" })); // in-progress
  clock += LEASE_MS; // the slow request's lease runs out (its renewal is a real 10 s timer: it never fires)
  await answer("takeover", post("order-2", { item: "slow" })); // claimed (takeover), completed
  finishSlow();
  await slow; // its complete is fenced off: lease-lost; its client still gets its 201
  store.down = true;
  await answer("down", post("order-5", { item: "fig" })); // store-error
  store.down = false;
  await answer("anonymous", post("order-6", { item: "fig" }, null)); // 401 before the guard: no event
});

afterAll(async () => {
  server?.close();
  context.disable();
  await tracerProvider.shutdown();
  await meterProvider.shutdown();
});

const at = (ms: number) => new Date(T0 + ms).toISOString();
const hr = (ms: number): HrTime => [Math.trunc((T0 + ms) / 1000), ((T0 + ms) % 1000) * 1e6];
const idempotencySpans = () => spans.getFinishedSpans().filter((span) => span.name === "idempotency");
const serverSpans = () => spans.getFinishedSpans().filter((span) => span.kind === SpanKind.SERVER);

it("answers the session as the contract says", () => {
  const order = (id: number): string =>
    JSON.stringify({ id, tenant: "acme", item: id === 1 ? "apple" : "slow" });
  expect(answers).toEqual({
    first: { status: 201, replayed: null, body: order(1) },
    retry: { status: 201, replayed: "true", body: order(1) },
    reused: { status: 422, replayed: null, body: expect.stringContaining("key-reused") },
    duplicate: { status: 409, replayed: null, body: expect.stringContaining("in-progress") },
    takeover: { status: 201, replayed: null, body: order(3) },
    slow: { status: 201, replayed: null, body: order(2) }, // delivered, but not stored: the key is C's now
    down: { status: 503, replayed: null, body: expect.stringContaining("store-unavailable") },
    anonymous: { status: 401, replayed: null, body: '{"error":"send Authorization: Bearer <token>"}' },
  });
});

describe("logs", () => {
  it("writes one JSON line per event, with the hashed identity and the ids of its span", () => {
    // the spans in the order they ended: each request's log lines carry its span's ids
    const [first, retry, reused, duplicate, takeover, slow, down] = idempotencySpans();
    const [k1, k2, k5] = [first, takeover, down].map((span) => span!.attributes["idempotency.key"]);
    expect(k1).toMatch(/^[0-9a-f]{64}$/);
    const ctx = (span: ReadableSpan | undefined) =>
      `"trace_id":"${span!.spanContext().traceId}","span_id":"${span!.spanContext().spanId}"`;
    const head = (ms: number, level: string, event: string, key: unknown) =>
      `{"time":"${at(ms)}","level":"${level}","msg":"idempotency ${event}","event":"${event}","key":"${key}",` +
      `"method":"POST","path":"/orders"`;
    const bodyBytes = (id: number, item: string) => JSON.stringify({ id, tenant: "acme", item }).length;

    expect(lines).toEqual([
      `${head(2, "info", "claimed", k1)},"elapsedMs":2,"takeover":false,${ctx(first)}}`,
      `${head(7, "info", "completed", k1)},"elapsedMs":7,"status":201,"bodyBytes":${bodyBytes(1, "apple")},"bodyStored":true,${ctx(first)}}`,
      `${head(9, "info", "replayed", k1)},"elapsedMs":2,"status":201,${ctx(retry)}}`,
      `${head(11, "warn", "key-reused", k1)},"elapsedMs":2,${ctx(reused)}}`,
      `${head(13, "info", "claimed", k2)},"elapsedMs":2,"takeover":false,${ctx(slow)}}`,
      `${head(15, "warn", "in-progress", k2)},"elapsedMs":2,"leaseRemainingMs":29998,"waitedMs":2,${ctx(duplicate)}}`,
      `${head(30_017, "info", "claimed", k2)},"elapsedMs":2,"takeover":true,${ctx(takeover)}}`,
      `${head(30_022, "info", "completed", k2)},"elapsedMs":7,"status":201,"bodyBytes":${bodyBytes(3, "slow")},"bodyStored":true,${ctx(takeover)}}`,
      `${head(30_027, "error", "lease-lost", k2)},"elapsedMs":30016,"operation":"complete",${ctx(slow)}}`,
      `${head(30_029, "error", "store-error", k5)},"elapsedMs":2,"operation":"begin","error":{"code":"ERR_IDEMPOTENCY_STORE","message":"Store begin failed: connect ECONNREFUSED 127.0.0.1:6379","cause":"connect ECONNREFUSED 127.0.0.1:6379"},${ctx(down)}}`,
    ]);
  });

  it("never logs the raw key or the tenant", () => {
    expect(lines.join("\n")).not.toMatch(/order-\d|acme|globex/);
  });
});

describe("spans", () => {
  it("traces each guarded request as one span from its start to its outcome, under the server span", () => {
    const summary = (span: ReadableSpan) => ({
      start: span.startTime,
      end: span.endTime,
      outcome: span.attributes["idempotency.outcome"],
      status: span.attributes["http.response.status_code"],
      spanStatus: span.status,
      events: span.events.map((event) => ({
        name: event.name,
        time: event.time,
        attributes: event.attributes,
      })),
    });
    const ok = { code: SpanStatusCode.UNSET };
    const claimed = (ms: number, takeover: boolean) => ({
      name: "claimed",
      time: hr(ms),
      attributes: { "idempotency.takeover": takeover },
    });
    expect(idempotencySpans().map(summary)).toEqual([
      // in the order they ended
      {
        start: hr(0),
        end: hr(7),
        outcome: "completed",
        status: 201,
        spanStatus: ok,
        events: [claimed(2, false)],
      },
      { start: hr(7), end: hr(9), outcome: "replayed", status: 201, spanStatus: ok, events: [] },
      { start: hr(9), end: hr(11), outcome: "key-reused", status: undefined, spanStatus: ok, events: [] },
      { start: hr(13), end: hr(15), outcome: "in-progress", status: undefined, spanStatus: ok, events: [] },
      {
        start: hr(30_015),
        end: hr(30_022),
        outcome: "completed",
        status: 201,
        spanStatus: ok,
        events: [claimed(30_017, true)],
      },
      {
        start: hr(11),
        end: hr(30_027),
        outcome: "lease-lost",
        status: undefined,
        spanStatus: {
          code: SpanStatusCode.ERROR,
          message: "lease lost during complete: the response was not stored",
        },
        events: [claimed(13, false)],
      },
      {
        start: hr(30_027),
        end: hr(30_029),
        outcome: "store-error",
        status: undefined,
        spanStatus: {
          code: SpanStatusCode.ERROR,
          message: "Store begin failed: connect ECONNREFUSED 127.0.0.1:6379",
        },
        events: [],
      },
    ]);
    expect(idempotencySpans()[0]!.attributes).toEqual({
      "idempotency.key": expect.stringMatching(/^[0-9a-f]{64}$/),
      "http.request.method": "POST",
      "url.path": "/orders",
      "idempotency.outcome": "completed",
      "http.response.status_code": 201,
    });
  });

  it("makes each idempotency span a child of its request's server span", () => {
    const servers = serverSpans();
    expect(servers).toHaveLength(8); // every request, the unauthenticated one too
    for (const span of idempotencySpans()) {
      const parent = servers.find((server) => server.spanContext().spanId === span.parentSpanContext?.spanId);
      expect(parent?.name).toBe("POST /orders");
      expect(parent?.spanContext().traceId).toBe(span.spanContext().traceId);
    }
  });
});

describe("metrics", () => {
  let collected: ResourceMetrics;
  beforeAll(async () => {
    ({ resourceMetrics: collected } = await metricReader.collect());
  });

  /** A metric's data points as `{ "attribute=value,…": value }`. */
  function points<T>(name: string): Record<string, T> {
    const metric = collected.scopeMetrics
      .flatMap((scope) => scope.metrics)
      .find((m) => m.descriptor.name === name);
    const entries = (metric?.dataPoints ?? []).map((point) => [
      Object.entries((point as DataPoint<T>).attributes)
        .map(([key, value]) => `${key}=${value}`)
        .join(","),
      (point as DataPoint<T>).value,
    ]);
    return Object.fromEntries(entries);
  }
  const histogram = (points: Record<string, Histogram>) =>
    Object.fromEntries(
      Object.entries(points).map(([key, { count, sum, min, max }]) => [key, { count, sum, min, max }]),
    );

  it("counts every event by type", () => {
    expect(points<number>("idempotency.events")).toEqual({
      "idempotency.event=claimed": 3,
      "idempotency.event=completed": 2,
      "idempotency.event=replayed": 1,
      "idempotency.event=key-reused": 1,
      "idempotency.event=in-progress": 1,
      "idempotency.event=lease-lost": 1,
      "idempotency.event=store-error": 1,
    });
  });

  it("times each guarded request to its outcome, in ms", () => {
    expect(histogram(points<Histogram>("idempotency.request.duration"))).toEqual({
      "idempotency.outcome=completed": { count: 2, sum: 14, min: 7, max: 7 },
      "idempotency.outcome=replayed": { count: 1, sum: 2, min: 2, max: 2 },
      "idempotency.outcome=key-reused": { count: 1, sum: 2, min: 2, max: 2 },
      "idempotency.outcome=in-progress": { count: 1, sum: 2, min: 2, max: 2 },
      "idempotency.outcome=lease-lost": { count: 1, sum: 30_016, min: 30_016, max: 30_016 },
      "idempotency.outcome=store-error": { count: 1, sum: 2, min: 2, max: 2 },
    });
  });

  it("times every store call by operation and outcome, in ms", () => {
    expect(histogram(points<Histogram>("idempotency.store.duration"))).toEqual({
      // order-1 three times, order-2 three times; one begin while the store was down
      "idempotency.store.operation=begin,idempotency.store.outcome=ok": { count: 6, sum: 12, min: 2, max: 2 },
      "idempotency.store.operation=begin,idempotency.store.outcome=error": {
        count: 1,
        sum: 2,
        min: 2,
        max: 2,
      },
      // the first order, the takeover, and the fenced-off slow one (false is an answer, not an error)
      "idempotency.store.operation=complete,idempotency.store.outcome=ok": {
        count: 3,
        sum: 15,
        min: 5,
        max: 5,
      },
    });
  });
});

describe("a burst", () => {
  it("gives duplicates that start in the claim's millisecond spans of their own", async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const { onEvent } = idempotencyTelemetry({ tracer: provider.getTracer("burst"), log: () => {} });
    const base = { key: "k".repeat(64), method: "POST", path: "/orders" };
    onEvent({ ...base, type: "claimed", takeover: false, at: T0 + 10, elapsedMs: 2 });
    onEvent({
      ...base,
      type: "in-progress",
      leaseRemainingMs: 30_000,
      waitedMs: 2,
      at: T0 + 10,
      elapsedMs: 2,
    });
    onEvent({
      ...base,
      type: "in-progress",
      leaseRemainingMs: 30_000,
      waitedMs: 3,
      at: T0 + 11,
      elapsedMs: 3,
    });
    onEvent({
      ...base,
      type: "completed",
      status: 201,
      bodyBytes: 2,
      bodyStored: true,
      at: T0 + 20,
      elapsedMs: 12,
    });
    expect(
      exporter.getFinishedSpans().map((span) => ({
        start: span.startTime,
        end: span.endTime,
        outcome: span.attributes["idempotency.outcome"],
        events: span.events.map((event) => event.name),
      })),
    ).toEqual([
      { start: hr(8), end: hr(10), outcome: "in-progress", events: [] },
      { start: hr(8), end: hr(11), outcome: "in-progress", events: [] },
      { start: hr(8), end: hr(20), outcome: "completed", events: ["claimed"] },
    ]);
    await provider.shutdown();
  });
});
