import type { OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import { Readable } from "node:stream";
import type { Execution } from "./execution.js";
import type { PreparedResponse } from "./problems.js";

/**
 * A Node response: HTTP/1 `ServerResponse`, or the HTTP/2 compatibility API's response.
 *
 * @example
 * ```ts
 * const install = (res: NodeResponse, execution: Execution) => captureNodeResponse(res, execution);
 * ```
 */
export type NodeResponse = ServerResponse | Http2ServerResponse;

/**
 * What a binding can ask of a response capture after installing it.
 *
 * @example
 * ```ts
 * const capture = captureNodeResponse(res, execution);
 * if (capture.responding && frameworkGaveUp) capture.abandon();
 * ```
 */
export interface NodeCapture {
  /** A response head has been reported, or a stream was piped into the response: a response is under way. */
  readonly responding: boolean;
  /** The response can still be written: it has not ended, is not being drained, and was not abandoned. */
  readonly open: boolean;
  /**
   * No response will ever come (the framework gave up on it): the claim is released and the response is left
   * to the framework. Does nothing once the response has ended or is being drained into the record.
   */
  abandon(): void;
}

type Callback = (error?: Error | null) => void;
type Loose = (...args: unknown[]) => unknown;

/**
 * Routes a claimed request's Node response through the engine's `Execution`, for any framework on Node's
 * `http` (Express, Koa, your own). The handler, error handlers and the framework write as usual; the capture
 * decides what reaches the socket:
 *
 * - **Head.** `writeHead` records status and headers on the response without sending them; the head goes out
 *   with the first bytes the engine lets through (`flushHeaders` waits for them too). Until then a new head
 *   replaces the old one (an error handler taking over a response the handler had begun), and what is stored
 *   is what the client gets.
 * - **Body.** Each chunk goes through `execution.write`; only the bytes it returns are sent. A chunk that is
 *   not a string or bytes throws `ERR_INVALID_ARG_TYPE`, as Node does.
 * - **End.** `end` waits for `execution.end()` (the record is completed first), then sends the rest. A write
 *   after `end` is refused with `ERR_STREAM_WRITE_AFTER_END`, a second `end` calls back on `finish`, as Node
 *   does.
 * - **The client leaves.** The handler goes on and its response is still stored, so a retry replays it:
 *   writes after the close are captured and acknowledged (nobody is there to apply backpressure), and a
 *   stream piped into the response (`readable.pipe(res)`, `pipeline`), whether it was flowing when the client
 *   left or only starts afterwards, is read to its end into the record. Never put an endless stream (server-sent
 *   events) behind it.
 *
 * Install it once per claimed response, before anything is written. `pipedBefore` is a stream that was piped into
 * the response before the capture was installed (nothing written yet; a hijacked Fastify reply), so that it is
 * drained too.
 *
 * @example
 * ```ts
 * import { captureNodeResponse } from "@idempotency/core/node";
 *
 * const decision = await idempotency.handle(request);
 * if (decision.action === "execute") {
 *   captureNodeResponse(res, decision.execution);
 *   next(); // the handler writes to res as usual
 * }
 * ```
 */
export function captureNodeResponse(
  res: NodeResponse,
  execution: Execution,
  pipedBefore?: unknown,
): NodeCapture {
  const capture = new Capture(res, execution, pipedBefore instanceof Readable ? pipedBefore : undefined);
  const target = res as unknown as Record<PropertyKey, unknown>;
  target[CAPTURE] = capture;
  // The same functions on every response (they find their capture on `this`), so installing a capture
  // allocates no closures and every response keeps one shape.
  target.writeHead = captureWriteHead;
  if (capture.originalFlushHeaders) target.flushHeaders = captureFlushHeaders;
  target.write = captureWrite;
  target.end = captureEnd;
  res.on("pipe", onPipe);
  res.once("close", onClose);
  return capture;
}

/** Where a response's capture is kept, for the functions installed on it. */
const CAPTURE = Symbol("@idempotency/core:node-capture");

function captureOf(res: unknown): Capture {
  return (res as Record<PropertyKey, Capture>)[CAPTURE] as Capture;
}

/** One response's capture state; the response's own methods are the `captureX` functions below. */
class Capture implements NodeCapture {
  readonly res: NodeResponse;
  readonly execution: Execution;
  readonly originalWriteHead: Loose;
  readonly originalWrite: Loose;
  readonly originalEnd: Loose;
  readonly originalFlushHeaders: Loose | undefined;
  /** Bytes (or the end) went out: the head is Node's from now on. */
  released = false;
  /** `end` was called, or a piped stream is being drained into the record: no more writes. */
  ending = false;
  /** The engine's part is over without an end: everything passes through untouched. */
  abandoned = false;
  /** The final bytes are being sent: Node's own calls pass through (HTTP/2's `end` calls `this.write`). */
  sending = false;
  clientGone = false;
  piped: Readable | undefined;
  /** The head last reported to the engine, while it may still change. */
  reportedStatus = 0;
  reportedHeaders: OutgoingHttpHeaders | undefined;

  constructor(res: NodeResponse, execution: Execution, piped: Readable | undefined) {
    this.res = res;
    this.execution = execution;
    this.originalWriteHead = res.writeHead as Loose;
    this.originalWrite = res.write as Loose;
    this.originalEnd = res.end as Loose;
    this.originalFlushHeaders = (res as ServerResponse).flushHeaders as Loose | undefined;
    this.piped = piped;
  }

  get responding(): boolean {
    return this.reportedHeaders !== undefined || this.piped !== undefined;
  }

  get open(): boolean {
    return !this.ending && !this.abandoned;
  }

  abandon(): void {
    if (this.ending || this.abandoned) return;
    this.abandoned = true;
    void this.execution.abandon();
  }

  get passThrough(): boolean {
    return this.abandoned || this.sending;
  }

  /** Reports the head before the engine sees bytes, and again when it changed before any byte went out. */
  syncHead(): void {
    if (this.released) return;
    const res = this.res;
    const headers = res.getHeaders();
    const reported = this.reportedHeaders;
    if (reported !== undefined && res.statusCode === this.reportedStatus && sameHeaders(reported, headers))
      return;
    this.reportedStatus = res.statusCode;
    this.reportedHeaders = headers;
    this.execution.start(res.statusCode, headers);
  }

  /** Reads what is left of a piped stream into the record, now that nobody receives it. */
  drain(source: Readable): void {
    if (this.ending || this.abandoned) return;
    source.unpipe(this.res as unknown as NodeJS.WritableStream);
    this.syncHead();
    this.ending = drainAfterClose(source, this.execution);
  }
}

function onPipe(this: NodeResponse, source: unknown): void {
  if (!(source instanceof Readable)) return;
  const capture = captureOf(this);
  capture.piped = source;
  if (capture.clientGone) capture.drain(source); // a stream that only starts after the client left
}

function onClose(this: NodeResponse): void {
  const capture = captureOf(this);
  if (this.writableFinished || capture.ending || capture.abandoned) return;
  capture.clientGone = true;
  noteCutShort(this, capture.execution);
  const piped = capture.piped;
  if (piped && !piped.readableEnded && !piped.destroyed) capture.drain(piped);
}

/**
 * Whether the client left before its whole request body arrived: the Node request is destroyed and its
 * message incomplete. A binding that finds this once the handler answered calls `execution.requestAborted()`
 * (`captureNodeResponse` does it itself), so that an error answered to the broken upload is not stored.
 *
 * @example
 * ```ts
 * import { requestCutShort } from "@idempotency/core/node";
 *
 * if (requestCutShort(incoming)) execution.requestAborted?.();
 * ```
 */
export function requestCutShort(
  req: { destroyed?: unknown; complete?: unknown } | null | undefined,
): boolean {
  return req?.destroyed === true && req.complete === false;
}

/** Tells the execution when the client left mid-body: see {@link requestCutShort}. */
function noteCutShort(res: NodeResponse, execution: Execution): void {
  if (requestCutShort((res as ServerResponse).req as ServerResponse["req"] | undefined)) {
    execution.requestAborted?.();
  }
}

function captureWriteHead(
  this: ServerResponse,
  statusCode: number,
  reasonOrHeaders?: string | OutgoingHttpHeaders | OutgoingHttpHeader[],
  maybeHeaders?: OutgoingHttpHeaders | OutgoingHttpHeader[],
): ServerResponse {
  const capture = captureOf(this);
  if (capture.released || capture.passThrough || this.headersSent) {
    return capture.originalWriteHead.call(this, statusCode, reasonOrHeaders, maybeHeaders) as ServerResponse;
  }
  if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999) {
    // Node's own validation throws the usual ERR_HTTP_INVALID_STATUS_CODE before anything is sent.
    return capture.originalWriteHead.call(this, statusCode) as ServerResponse;
  }
  this.statusCode = statusCode;
  if (typeof reasonOrHeaders === "string") this.statusMessage = reasonOrHeaders;
  const headers = typeof reasonOrHeaders === "string" ? maybeHeaders : reasonOrHeaders;
  if (Array.isArray(headers)) applyHeaderList(this, headers);
  else if (headers) {
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) this.setHeader(name, value);
  }
  return this;
}

function captureFlushHeaders(this: ServerResponse): void {
  const capture = captureOf(this);
  if (capture.released || capture.passThrough) capture.originalFlushHeaders?.call(this);
}

function captureWrite(this: NodeResponse, chunk: unknown, ...rest: unknown[]): boolean {
  const capture = captureOf(this);
  if (capture.passThrough || this.writableEnded)
    return capture.originalWrite.call(this, chunk, ...rest) as boolean;
  const { encoding, callback } = writeArgs(rest);
  if (capture.ending) {
    const error = Object.assign(new Error("write after end"), { code: "ERR_STREAM_WRITE_AFTER_END" });
    if (callback) process.nextTick(callback, error);
    return false;
  }
  const bytes = toBytes(chunk, encoding);
  capture.syncHead();
  const forward = capture.execution.write(bytes);
  if (forward.length === 0 || capture.clientGone) {
    // Nothing may be sent yet (an empty chunk, the held-back end of a Content-Length body), or nobody is there.
    if (callback) process.nextTick(callback);
    return true;
  }
  capture.released = true;
  return capture.originalWrite.call(this, forward, callback) as boolean;
}

function captureEnd(this: NodeResponse, chunk?: unknown, ...rest: unknown[]): NodeResponse {
  const capture = captureOf(this);
  if (capture.passThrough) return capture.originalEnd.call(this, chunk, ...rest) as NodeResponse;
  let data = chunk;
  let args = rest;
  if (typeof data === "function") {
    args = [data];
    data = undefined;
  }
  const { encoding, callback } = writeArgs(args);
  if (capture.ending || this.writableEnded) {
    // Ended twice (an error handler after a handler that ended the response): as Node, call back on finish.
    if (callback) this.once("finish", callback);
    return this;
  }
  capture.ending = true;
  noteCutShort(this, capture.execution);
  const bytes = data === undefined || data === null ? undefined : toBytes(data, encoding);
  capture.syncHead();
  void capture.execution
    .end(bytes)
    .then((remaining) => {
      capture.released = true;
      capture.sending = true;
      const replacement = capture.execution.replacement;
      if (replacement !== undefined && !this.headersSent) replaceHead(this, replacement);
      capture.originalEnd.call(this, remaining.length > 0 ? remaining : undefined, callback);
    })
    .catch((error: unknown) => this.destroy(error instanceof Error ? error : new Error(String(error))));
  return this;
}

/** Discards the captured head for `replacement`'s (nothing of it was sent), e.g. a 503 after a failed commit. */
function replaceHead(res: NodeResponse, replacement: PreparedResponse): void {
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  const grouped = new Map<string, string[]>();
  for (const [name, value] of replacement.headers) grouped.set(name, [...(grouped.get(name) ?? []), value]);
  for (const [name, values] of grouped)
    res.setHeader(name, values.length === 1 ? (values[0] as string) : values);
  res.setHeader("content-length", String(replacement.body.length));
  res.statusCode = replacement.status;
}

/** Whether two `getHeaders()` snapshots hold the same names and values. */
function sameHeaders(a: OutgoingHttpHeaders, b: OutgoingHttpHeaders): boolean {
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  for (const name of names) {
    const x = a[name];
    const y = b[name];
    if (x === y) continue;
    if (!Array.isArray(x) || !Array.isArray(y) || x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

/** The encoding and callback among `write`/`end`'s arguments after the chunk. */
function writeArgs(rest: unknown[]): {
  encoding: BufferEncoding | undefined;
  callback: Callback | undefined;
} {
  const [first, second] = rest;
  const encoding = typeof first === "string" ? (first as BufferEncoding) : undefined;
  const callback = (
    typeof first === "function" ? first : typeof second === "function" ? second : undefined
  ) as Callback | undefined;
  return { encoding, callback };
}

function toBytes(chunk: unknown, encoding: BufferEncoding | undefined): Uint8Array {
  if (typeof chunk === "string") return Buffer.from(chunk, encoding ?? "utf8");
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw Object.assign(
    new TypeError(
      `The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received ${typeof chunk}`,
    ),
    { code: "ERR_INVALID_ARG_TYPE" },
  );
}

/**
 * `writeHead`'s array forms, a flat `[name, value, name, value]` list or `[name, value]` pairs, applied as
 * Node does: the list replaces earlier values of its names and keeps its own repeats.
 */
function applyHeaderList(res: NodeResponse, list: ReadonlyArray<unknown>): void {
  const values = new Map<string, string[]>();
  const add = (name: unknown, value: unknown) => {
    const key = String(name);
    const existing = values.get(key);
    if (existing) existing.push(String(value));
    else values.set(key, [String(value)]);
  };
  if (list.every((item) => Array.isArray(item))) {
    for (const pair of list as Array<[unknown, unknown]>) add(pair[0], pair[1]);
  } else {
    for (let i = 0; i + 1 < list.length; i += 2) add(list[i], list[i + 1]);
  }
  for (const [name, list] of values) res.setHeader(name, list.length === 1 ? (list[0] as string) : list);
}

/**
 * After the client left: reads what is left of `body`, a stream that was (or was about to be) piped into the
 * response, into `execution`, and completes it, so that a retry replays the whole response instead of
 * running the handler again. Frameworks destroy a piped body when the response closes (`pipeline`,
 * `on-finished`), so the stream's `destroy` is held off until it has ended. A stream that fails meanwhile
 * abandons the execution (the claim is released). Returns false, doing nothing, when `body` is not a
 * readable stream with something left to read. `captureNodeResponse` calls it; use it in a capture of your
 * own. Never use it for endless streams (server-sent events).
 *
 * @example
 * ```ts
 * import { drainAfterClose } from "@idempotency/core/node";
 *
 * res.once("close", () => {
 *   if (!res.writableFinished && !drainAfterClose(pipedBody, execution)) void execution.abandon();
 * });
 * ```
 */
export function drainAfterClose(body: unknown, execution: Execution): boolean {
  if (!(body instanceof Readable) || body.readableEnded || body.destroyed) return false;
  const destroy = body.destroy;
  body.destroy = function heldOff(this: Readable) {
    return this;
  };
  const restore = () => {
    body.destroy = destroy;
  };
  body.on("data", (chunk: Buffer | string) => {
    execution.write(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  });
  body.once("end", () => {
    restore();
    void execution.end();
  });
  body.once("error", () => {
    restore();
    void execution.abandon();
  });
  // Unpiping from the closed response pauses the stream: resume it once that has happened.
  setImmediate(() => body.resume());
  return true;
}
