import type { IdempotencyEvent, IdempotencyStore } from "@idempotency/core";
import {
  context,
  type Meter,
  metrics,
  type Span,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";

/** What `idempotencyTelemetry` writes to. Every field is optional: the defaults are the global OpenTelemetry API. */
export interface TelemetryOptions {
  /** Default: `trace.getTracer("@idempotency-examples/observability")`, the globally registered provider's. */
  tracer?: Tracer;
  /** Default: `metrics.getMeter("@idempotency-examples/observability")`. */
  meter?: Meter;
  /** Receives one JSON log line (no newline). Default: a line on stdout. Hand it to your logger as it is. */
  log?: (line: string) => void;
  /** The clock that times store calls, in ms. Default `performance.now` (monotonic). */
  now?: () => number;
}

export interface IdempotencyTelemetry {
  /** Pass as the engine's (or a binding's) `onEvent` option. */
  onEvent(event: IdempotencyEvent): void;
  /** Wraps a store so that every call is timed into `idempotency.store.duration`; pass the result as `store`. */
  instrumentStore(store: IdempotencyStore): IdempotencyStore;
}

const NAME = "@idempotency-examples/observability";

type Level = "info" | "warn" | "error";

/** How loud each event is: what an operator must look at is an error, what a client did wrong a warning. */
const LEVELS: Record<IdempotencyEvent["type"], Level> = {
  claimed: "info",
  completed: "info",
  replayed: "info",
  released: "info",
  "not-started": "info",
  "in-progress": "warn",
  "key-reused": "warn",
  "execution-limit": "warn",
  "lease-lost": "error",
  "store-error": "error",
  "fail-open": "error",
};

/**
 * Turns the engine's typed events into structured JSON logs, OpenTelemetry spans and metrics:
 *
 * - **logs**: one JSON line per event, with the event's own fields, the trace and span ids of its request's
 *   span, and the error's `code` and `cause` for `store-error` and `fail-open`;
 * - **spans**: one `idempotency` span per guarded request, from the moment the engine started handling it to
 *   its outcome (`idempotency.outcome`: `completed`, `replayed`, `in-progress`, `key-reused`, `lease-lost`,
 *   …), with a `claimed` span event when it took the key; a child of the span that was active when the
 *   engine decided (your HTTP server span, with a context manager registered);
 * - **metrics**: `idempotency.events` (a counter by `idempotency.event`), `idempotency.request.duration` (ms,
 *   by `idempotency.outcome`) and, through `instrumentStore`, `idempotency.store.duration` (ms, by
 *   `idempotency.store.operation` and `idempotency.store.outcome`).
 *
 * Nothing here holds the raw key or the tenant: `key` is the hashed identity. Metric attributes leave out
 * the path, whose values are unbounded; spans and logs carry it.
 */
export function idempotencyTelemetry(options: TelemetryOptions = {}): IdempotencyTelemetry {
  const tracer = options.tracer ?? trace.getTracer(NAME);
  const meter = options.meter ?? metrics.getMeter(NAME);
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const now = options.now ?? (() => performance.now());

  const events = meter.createCounter("idempotency.events", {
    description: "Idempotency events, by idempotency.event",
  });
  const requestDuration = meter.createHistogram("idempotency.request.duration", {
    description: "From the engine starting on a guarded request to its outcome",
    unit: "ms",
  });
  const storeDuration = meter.createHistogram("idempotency.store.duration", {
    description: "One idempotency store call",
    unit: "ms",
  });

  // The open spans of claimed requests, until their outcome. The events of one request carry the same hashed
  // identity and the same start (at - elapsedMs), which name its span: no other claim of that identity
  // starts in the same millisecond while it runs (a takeover comes a lease later; a waiter that claims after
  // the first was released comes after the first's outcome). Duplicates that start in the same millisecond
  // are answered at once and get spans of their own.
  const open = new Map<string, Span>();
  const spanKey = (event: IdempotencyEvent) => `${event.key} ${event.at - event.elapsedMs}`;

  function spanOf(event: IdempotencyEvent): Span {
    const id = spanKey(event);
    const claimed = open.get(id);
    if (claimed !== undefined && followsClaim(event)) return claimed;
    const span = tracer.startSpan(
      "idempotency",
      {
        startTime: event.at - event.elapsedMs,
        attributes: {
          "idempotency.key": event.key,
          "http.request.method": event.method,
          "url.path": event.path,
        },
      },
      context.active(),
    );
    if (event.type === "claimed") open.set(id, span);
    return span;
  }

  function onEvent(event: IdempotencyEvent): void {
    const span = spanOf(event);
    const fields = eventFields(event);
    if (event.type === "claimed") {
      span.addEvent("claimed", { "idempotency.takeover": event.takeover }, event.at);
    } else if (
      event.type === "store-error" &&
      (event.operation === "extend" || event.operation === "release")
    ) {
      // The request goes on: a failed renewal is retried, a failed release expires with its lease.
      span.addEvent("store-error", { "idempotency.store.operation": event.operation }, event.at);
    } else if (event.type === "execution-limit") {
      span.addEvent("execution-limit", { "idempotency.max_execution_ms": event.maxExecutionMs }, event.at);
    } else {
      // The outcome: completed, replayed, a conflict, released, lease lost, or the store failing on begin or
      // (after its retries) on complete.
      const outcome = event.type;
      span.setAttribute("idempotency.outcome", outcome);
      if ("status" in event && event.status !== null)
        span.setAttribute("http.response.status_code", event.status);
      if (LEVELS[event.type] === "error") {
        span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(event) });
      }
      span.end(event.at);
      if (open.get(spanKey(event)) === span) open.delete(spanKey(event));
      requestDuration.record(event.elapsedMs, { "idempotency.outcome": outcome });
    }
    events.add(1, { "idempotency.event": event.type });

    const { traceId, spanId } = span.spanContext();
    log(
      JSON.stringify({
        time: new Date(event.at).toISOString(),
        level: LEVELS[event.type],
        msg: `idempotency ${event.type}`,
        ...fields,
        trace_id: traceId,
        span_id: spanId,
      }),
    );
  }

  function instrumentStore(store: IdempotencyStore): IdempotencyStore {
    const timed =
      <A extends unknown[], R>(operation: string, call: (...args: A) => Promise<R>) =>
      async (...args: A): Promise<R> => {
        const startedAt = now();
        let outcome = "error";
        try {
          const result = await call(...args);
          outcome = "ok";
          return result;
        } finally {
          storeDuration.record(now() - startedAt, {
            "idempotency.store.operation": operation,
            "idempotency.store.outcome": outcome,
          });
        }
      };
    return {
      begin: timed("begin", store.begin.bind(store)),
      complete: timed("complete", store.complete.bind(store)),
      extend: timed("extend", store.extend.bind(store)),
      release: timed("release", store.release.bind(store)),
      get: timed("get", store.get.bind(store)),
      delete: timed("delete", store.delete.bind(store)),
      ...(store.close ? { close: store.close.bind(store) } : {}),
    };
  }

  return { onEvent, instrumentStore };
}

/** Whether the event is reported by a request that claimed its key (and so has an open span). */
function followsClaim(event: IdempotencyEvent): boolean {
  switch (event.type) {
    case "completed":
    case "released":
    case "not-started":
    case "lease-lost":
    case "execution-limit":
      return true;
    case "store-error":
      return event.operation !== "begin";
    default:
      return false;
  }
}

/** The event as log fields: everything it carries, its error reduced to what a log line can hold. */
function eventFields(event: IdempotencyEvent): Record<string, unknown> {
  const { type, ...rest } = event;
  const fields: Record<string, unknown> = { event: type, ...rest };
  delete fields.at; // the line's `time`
  if ("error" in event) {
    const cause = event.error.cause;
    fields.error = {
      code: event.error.code,
      message: event.error.message,
      ...(cause instanceof Error ? { cause: cause.message } : {}),
    };
  }
  return fields;
}

function errorMessage(event: IdempotencyEvent): string {
  if (event.type === "lease-lost") return `lease lost during ${event.operation}: the response was not stored`;
  if (event.type === "store-error" || event.type === "fail-open") return event.error.message;
  return event.type;
}
