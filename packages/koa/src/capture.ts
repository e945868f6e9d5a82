import type { OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Execution } from "@idempotency/core";
import { drainAfterClose } from "@idempotency/core/node";
import type { AnyContext } from "./request.js";

type Callback = (error?: Error | null) => void;

/**
 * Reports what Koa (or a handler bypassing it with `ctx.respond = false`) writes to the Node response to the
 * engine's `execution`, at the `ServerResponse` level: what is stored is exactly what Koa serialised, after
 * every middleware and error handler had its say, so the final status decides.
 *
 * - `writeHead` / the first `write` / `end` report the head (`execution.start`);
 * - each `write` forwards what `execution.write` returns;
 * - `end` waits for `execution.end` (the record is completed) and then sends the remaining bytes;
 * - when Koa's error handling (`ctx.onerror`) gives up without a response, the claim is released;
 * - the connection closing never stops lease renewal: the handler still runs, and a client that gave up and
 *   retries must find the key in progress. If the handler has not responded yet, Koa is told the response is
 *   still writable, so it serialises the handler's result into the capture as
 *   usual instead of skipping it; a streamed response that was cut off (or only starts after the client left,
 *   when Koa destroys the stream) can never be completed, so its claim is released (`execution.abandon`).
 */
export function captureResponse(ctx: AnyContext, execution: Execution): void {
  const res = ctx.res;
  // The originals, as loosely typed as Node's overloads are.
  const writeHead = res.writeHead as (...args: unknown[]) => ServerResponse;
  const write = res.write as (...args: unknown[]) => boolean;
  const end = res.end as (...args: unknown[]) => ServerResponse;
  const flushHeaders = res.flushHeaders;
  let headed = false;
  let ending = false;
  /** The execution is over without `end` (abandoned): everything passes through untouched. */
  let abandoned = false;
  /** The end is being sent: Node's own calls pass through (HTTP/2's `end` calls `this.write`). */
  let sending = false;
  let clientGone = false;

  const head = (status: number, extra?: unknown) => {
    if (headed) return;
    headed = true;
    execution.start(status, headersWith(res.getHeaders(), extra));
  };
  const abandon = () => {
    abandoned = true;
    void execution.abandon();
  };

  res.writeHead = function (this: ServerResponse, status: number, ...rest: unknown[]) {
    if (!ending && !abandoned) head(status, typeof rest[0] === "string" ? rest[1] : rest[0]);
    return writeHead.call(this, status, ...rest);
  } as ServerResponse["writeHead"];

  // The head goes out with the first bytes the engine lets through, never before (ctx.flushHeaders()).
  res.flushHeaders = function (this: ServerResponse): void {
    if (ending || abandoned) flushHeaders.call(this);
  };

  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]): boolean {
    if (abandoned || sending) return write.call(this, chunk, ...rest);
    if (ending) {
      // Written after end() while the end waits for the store: refused, as Node refuses a write after end.
      const { callback } = chunkArgs(chunk, rest);
      const error = Object.assign(new Error("write after end"), { code: "ERR_STREAM_WRITE_AFTER_END" });
      if (callback) process.nextTick(callback, error);
      return false;
    }
    if (clientGone) {
      // A stream that only starts now is destroyed by Koa, and nobody would read it: it cannot complete.
      abandon();
      return write.call(this, chunk, ...rest);
    }
    const { bytes, callback } = chunkArgs(chunk, rest);
    head(res.statusCode);
    const forward = execution.write(bytes);
    if (forward.length === 0) {
      // Nothing may be sent yet (an empty chunk, or the held-back end of a Content-Length body).
      if (callback) process.nextTick(callback);
      return true;
    }
    return write.call(this, forward, callback);
  } as ServerResponse["write"];

  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]): ServerResponse {
    if (abandoned || sending) return end.call(this, chunk, ...rest);
    let args = rest;
    let body = chunk;
    if (typeof body === "function") {
      args = [body];
      body = undefined;
    }
    const { bytes, callback } = chunkArgs(body, args);
    if (ending) {
      // Ended twice (e.g. Koa's error handler after a handler ended the response itself): ignored, as Node does.
      if (callback) res.once("finish", callback);
      return this;
    }
    ending = true;
    head(res.statusCode);
    execution
      .end(bytes.length > 0 ? bytes : undefined)
      .catch(() => new Uint8Array(0))
      .then((remaining) => {
        sending = true;
        end.call(res, remaining.length > 0 ? remaining : undefined, callback);
      });
    return this;
  } as ServerResponse["end"];

  // Koa pipes a stream body into the response (Koa 3 with stream.pipeline, which destroys the response when
  // the stream fails). When Koa's error handling then gives up on the response (its head went out, or its
  // socket is gone), no response will ever come. Before that point, an error reaching ctx.onerror is about
  // the connection (ECONNRESET while the handler still runs), and the handler's result is still awaited.
  let piping = false;
  res.once("pipe", () => {
    piping = true;
  });
  const onerror = ctx.onerror;
  ctx.onerror = function (this: AnyContext, error: unknown) {
    onerror.call(this, error as Error);
    if (error != null && !ending && !abandoned && (headed || piping)) abandon();
  };

  const onClose = () => {
    if (ending || abandoned) return;
    if (headed) {
      // Cut off mid-way. A stream body still holds the rest of the response: read it to its end and store
      // it, so a retry replays it. Anything else can never be completed.
      ending = true;
      if (!drainAfterClose(ctx.body, execution)) abandon();
      return;
    }
    clientGone = true;
    // Koa skips (v2) or empties (v3) the response of a request whose socket is gone; keep it serialising the
    // handler's result so that the record is still completed and a retry replays it.
    Object.defineProperty(ctx.response, "writable", {
      configurable: true,
      get: () => !ending && !abandoned,
    });
  };
  if (res.destroyed) onClose();
  else res.once("close", onClose);
}

/** The bytes of a `write`/`end` chunk, and the callback among the arguments after it. */
function chunkArgs(chunk: unknown, rest: unknown[]): { bytes: Uint8Array; callback: Callback | undefined } {
  const [first, second] = rest;
  const encoding = typeof first === "string" ? (first as BufferEncoding) : "utf8";
  const callback = (
    typeof first === "function" ? first : typeof second === "function" ? second : undefined
  ) as Callback | undefined;
  let bytes: Uint8Array;
  if (chunk === undefined || chunk === null) bytes = new Uint8Array(0);
  else if (typeof chunk === "string") bytes = Buffer.from(chunk, encoding);
  else if (chunk instanceof Uint8Array) bytes = chunk;
  else bytes = Buffer.from(String(chunk));
  return { bytes, callback };
}

/**
 * The headers set on the response plus those passed to `writeHead` (an object, a flat `[name, value, …]`
 * array, or `[name, value]` pairs), the latter winning, as Node sends them.
 */
function headersWith(set: OutgoingHttpHeaders, extra: unknown): Array<[string, string]> {
  const passed: Array<[string, string]> = [];
  const overridden = new Set<string>();
  const add = (name: string, value: unknown) => {
    const lower = name.toLowerCase();
    overridden.add(lower);
    if (Array.isArray(value)) for (const item of value) passed.push([lower, String(item)]);
    else if (value !== undefined) passed.push([lower, String(value)]);
  };
  if (Array.isArray(extra)) {
    if (extra.length > 0 && Array.isArray(extra[0])) {
      for (const [name, value] of extra as Array<[string, unknown]>) add(name, value);
    } else {
      for (let i = 0; i + 1 < extra.length; i += 2) add(String(extra[i]), extra[i + 1]);
    }
  } else if (extra && typeof extra === "object") {
    for (const [name, value] of Object.entries(extra)) add(name, value);
  }
  const own: Array<[string, string]> = [];
  for (const [name, value] of Object.entries(set)) {
    if (overridden.has(name) || value === undefined) continue;
    if (Array.isArray(value)) for (const item of value) own.push([name, String(item)]);
    else own.push([name, String(value)]);
  }
  return [...own, ...passed];
}
