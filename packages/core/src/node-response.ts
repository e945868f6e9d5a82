import type { OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Execution } from "./engine.js";
import { drainAfterClose } from "./node.js";

type Callback = (error?: Error | null) => void;
type WriteHead = ServerResponse["writeHead"];
type Write = ServerResponse["write"];
type End = ServerResponse["end"];

/**
 * Routes everything written to a Node `ServerResponse` through a claimed request's `Execution`, for bindings
 * whose handlers write the response themselves (Express, a hijacked Fastify reply, plain `node:http`): each
 * chunk is captured, only the bytes `execution.write` returns reach the socket, and `end` waits for
 * `execution.end()` (the record is completed first). The head is deferred until the first bytes go out
 * (`writeHead` and `flushHeaders` included), so a body-less response is not visible to the client before the
 * record is completed, and a head changed before any byte went out (an error handler taking over) replaces
 * the one reported. A stream piped into the response whose client leaves mid-way is read to its end and
 * stored (see {@link drainAfterClose}). Call it once per claimed response, before anything is written;
 * `piped` is a stream that was piped into the response before the capture was installed (nothing has been
 * written yet), so that it is drained too.
 *
 * @example
 * ```ts
 * import { captureNodeResponse } from "@idempotency/core/node";
 *
 * const decision = await idempotency.handle(request);
 * if (decision.action === "execute") {
 *   captureNodeResponse(res, decision.execution);
 *   handler(req, res); // writes as usual; the record is completed before the response ends
 * }
 * ```
 */
export function captureNodeResponse(res: ServerResponse, execution: Execution, piped?: unknown): void {
  const original = {
    writeHead: res.writeHead,
    write: res.write,
    end: res.end,
    flushHeaders: res.flushHeaders,
  };
  // Set once bytes (or the end) have been let through: from then on writeHead and flushHeaders are Node's
  // own again, also when an outer wrapper (compression) forwards our bytes later, asynchronously.
  let released = false;
  let ending = false;
  /** The head last reported to the engine, while it may still change (nothing has been let through). */
  let reportedHead: string | undefined;

  // A stream piped into the response (`readable.pipe(res)`, `pipeline`): if the client leaves mid-way, what is
  // left of it is read into the execution, so the whole response is still stored and a retry replays it.
  let source = piped;
  res.on("pipe", (readable: unknown) => {
    source = readable;
  });
  res.once("close", () => {
    if (released && !ending && !res.writableFinished && source !== undefined) {
      ending = true;
      if (!drainAfterClose(source, execution)) ending = false;
    }
  });

  function forward<T>(send: () => T): T {
    released = true;
    return send();
  }

  // Reports the head before the engine sees bytes, and again whenever it changed before any byte went out,
  // so the stored head is the one sent.
  function syncHead(): void {
    if (released) return;
    const headers = res.getHeaders();
    const head = `${res.statusCode} ${JSON.stringify(headers)}`;
    if (head === reportedHead) return;
    reportedHead = head;
    execution.start(res.statusCode, headers);
  }

  // Records the status and headers on the response without sending them (they go with the first bytes).
  res.writeHead = function writeHead(
    this: ServerResponse,
    statusCode: number,
    reasonOrHeaders?: string | OutgoingHttpHeaders | OutgoingHttpHeader[],
    maybeHeaders?: OutgoingHttpHeaders | OutgoingHttpHeader[],
  ) {
    if (released || res.headersSent) {
      return (original.writeHead as (...args: unknown[]) => ServerResponse).call(
        res,
        statusCode,
        reasonOrHeaders,
        maybeHeaders,
      );
    }
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999) {
      // Node's own validation throws the usual ERR_HTTP_INVALID_STATUS_CODE before sending anything.
      return (original.writeHead as (...args: unknown[]) => ServerResponse).call(res, statusCode);
    }
    res.statusCode = statusCode;
    const headers = typeof reasonOrHeaders === "string" ? maybeHeaders : reasonOrHeaders;
    if (typeof reasonOrHeaders === "string") res.statusMessage = reasonOrHeaders;
    if (Array.isArray(headers)) applyHeaderList(res, headers);
    else if (headers) for (const [name, value] of Object.entries(headers)) setDefined(res, name, value);
    return res;
  } as WriteHead;

  // Deferred like writeHead: the head goes out with the first bytes the engine lets through.
  res.flushHeaders = function flushHeaders(this: ServerResponse) {
    if (released) original.flushHeaders.call(res);
  };

  res.write = function write(
    this: ServerResponse,
    chunk: unknown,
    encodingOrCallback?: unknown,
    callback?: unknown,
  ) {
    const encoding =
      typeof encodingOrCallback === "string" ? (encodingOrCallback as BufferEncoding) : undefined;
    const done = (typeof encodingOrCallback === "function" ? encodingOrCallback : callback) as
      | Callback
      | undefined;
    if (ending && !res.writableEnded) {
      // Ended by the handler, waiting for the store: refuse like Node does after end().
      const error = Object.assign(new Error("write after end"), { code: "ERR_STREAM_WRITE_AFTER_END" });
      process.nextTick(() => done?.(error));
      return false;
    }
    if (res.writableEnded) {
      return (original.write as (...args: unknown[]) => boolean).call(
        res,
        chunk,
        encodingOrCallback,
        callback,
      );
    }
    const bytes = toBytes(chunk, encoding);
    syncHead();
    const out = execution.write(bytes);
    if (out.length === 0) {
      if (done) process.nextTick(done);
      return true;
    }
    return forward(() => (original.write as (...args: unknown[]) => boolean).call(res, out, done));
  } as Write;

  res.end = function end(
    this: ServerResponse,
    chunk?: unknown,
    encodingOrCallback?: unknown,
    callback?: unknown,
  ) {
    if (ending || res.writableEnded) return res;
    ending = true;
    let data = chunk;
    let encoding =
      typeof encodingOrCallback === "string" ? (encodingOrCallback as BufferEncoding) : undefined;
    let done = (typeof encodingOrCallback === "function" ? encodingOrCallback : callback) as
      | Callback
      | undefined;
    if (typeof chunk === "function") {
      done = chunk as Callback;
      data = undefined;
      encoding = undefined;
    }
    const bytes = data === undefined || data === null ? undefined : toBytes(data, encoding);
    syncHead();
    void execution
      .end(bytes)
      .then((rest) =>
        forward(() => (original.end as (...args: unknown[]) => ServerResponse).call(res, rest, done)),
      )
      .catch((error: unknown) => res.destroy(error instanceof Error ? error : new Error(String(error))));
    return res;
  } as End;
}

function toBytes(chunk: unknown, encoding: BufferEncoding | undefined): Uint8Array {
  if (typeof chunk === "string") return Buffer.from(chunk, encoding ?? "utf8");
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError(
    `The "chunk" argument must be of type string or an instance of Buffer or Uint8Array. Received ${typeof chunk}`,
  );
}

function setDefined(res: ServerResponse, name: string, value: OutgoingHttpHeader | undefined): void {
  if (value !== undefined) res.setHeader(name, value);
}

/** `writeHead`'s array forms: a flat `[name, value, name, value]` list or `[name, value]` pairs. */
function applyHeaderList(res: ServerResponse, list: ReadonlyArray<unknown>): void {
  const pairs: Array<[string, string]> = [];
  if (list.every((item) => Array.isArray(item))) {
    for (const pair of list as Array<[string, unknown]>) pairs.push([String(pair[0]), String(pair[1])]);
  } else {
    for (let i = 0; i + 1 < list.length; i += 2) pairs.push([String(list[i]), String(list[i + 1])]);
  }
  // Like Node: the list replaces earlier values of its names and keeps its own repeats.
  for (const [name] of pairs) res.removeHeader(name);
  for (const [name, value] of pairs) res.appendHeader(name, value);
}
