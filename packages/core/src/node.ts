/**
 * Helpers for bindings on Node's `http` request (Express, Koa, or your own): the parts of translating an
 * `IncomingMessage` into an `IdempotencyRequest` that do not depend on the framework.
 *
 * @packageDocumentation
 */
import type { IncomingMessage } from "node:http";
import { finished, Readable, type ReadableOptions } from "node:stream";
import {
  IdempotencyBodyConsumedError,
  IdempotencyRequestAbortedError,
  IdempotencyRequestTooLargeError,
} from "./errors.js";
import type { IdempotencyRequest } from "./request.js";

export {
  captureNodeResponse,
  drainAfterClose,
  type NodeCapture,
  type NodeResponse,
  requestCutShort,
} from "./node-capture.js";
export { splitRequestTarget } from "./target.js";

/**
 * The engine's header pairs (lower-case names, a name may repeat) in the form Node's `setHeader` and
 * `writeHead` take: one value as a string, a repeated name as one list of its values in order. Setting the
 * pairs one by one would keep only the last of a repeated name (`setHeader` replaces, and Node 20's list
 * form of `writeHead` does the same).
 *
 * @example
 * ```ts
 * import { groupHeaders } from "@idempotency/core/node";
 *
 * for (const [name, value] of groupHeaders(decision.response.headers)) res.setHeader(name, value);
 * // [["set-cookie", "a=1"], ["set-cookie", "b=2"]] → "set-cookie" = ["a=1", "b=2"]
 * ```
 */
export function groupHeaders(
  headers: ReadonlyArray<readonly [string, string]>,
): Map<string, string | string[]> {
  const grouped = new Map<string, string | string[]>();
  for (const [name, value] of headers) {
    const earlier = grouped.get(name);
    if (earlier === undefined) grouped.set(name, value);
    else if (typeof earlier === "string") grouped.set(name, [earlier, value]);
    else earlier.push(value);
  }
  return grouped;
}

/**
 * Case-insensitive header lookup over Node's `rawHeaders`, joining repeated fields with `", "` like WHATWG
 * `Headers.get` (Node's `req.headers` keeps only the first of some repeated fields, which would hide a second
 * `Idempotency-Key`). Indexed on first use.
 *
 * @example
 * ```ts
 * import { nodeHeaders } from "@idempotency/core/node";
 *
 * const headers = nodeHeaders(req.rawHeaders);
 * headers.get("idempotency-key"); // "a, b" when the client sent two fields
 * ```
 */
export function nodeHeaders(rawHeaders: readonly string[]): IdempotencyRequest["headers"] {
  let index: Map<string, string[]> | undefined;
  return {
    get(name) {
      index ??= indexRawHeaders(rawHeaders);
      return index.get(name.toLowerCase())?.join(", ") ?? null;
    },
  };
}

function indexRawHeaders(raw: readonly string[]): Map<string, string[]> {
  const values = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    const list = values.get(name);
    if (list) list.push(value);
    else values.set(name, [value]);
  }
  return values;
}

/**
 * Reads a request stream to its end, or rejects with `IdempotencyRequestTooLargeError` as soon as more than
 * `maxBytes` arrived, or with `IdempotencyRequestAbortedError` when the request ends before its body does
 * (the client left mid-upload). The rest then flows on unread (Node discards it), so an oversized body is never
 * buffered and a keep-alive connection still reaches its next request. Also resumes a stream that earlier
 * middleware paused. Settles only after the stream has finished (or failed), so a caller may then give the
 * request a fresh readable state without racing its destruction.
 *
 * @example
 * ```ts
 * import { readNodeBody } from "@idempotency/core/node";
 *
 * const request = { ...translated, body: (maxBytes?: number) => (cached ??= readNodeBody(req, maxBytes)) };
 * ```
 */
export function readNodeBody(req: IncomingMessage, maxBytes = Number.POSITIVE_INFINITY): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    const settle = (error?: Error | null) => {
      if (settled) return;
      settled = true;
      req.off("data", onData);
      cleanup();
      if (!error) resolve(Buffer.concat(chunks));
      else if (error instanceof IdempotencyRequestTooLargeError) reject(error);
      else reject(new IdempotencyRequestAbortedError({ cause: error })); // the client left mid-body
    };
    const onData = (chunk: Buffer | string) => {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      received += bytes.length;
      if (received > maxBytes) settle(new IdempotencyRequestTooLargeError(maxBytes));
      else chunks.push(bytes);
    };
    req.on("data", onData);
    req.resume();
    const cleanup = finished(req, { writable: false }, settle);
  });
}

/**
 * The request body, with `req` left readable for whoever reads it next (`express.json()`, a Koa body parser,
 * the handler): the body is read once, however many read it. Rejects like {@link readNodeBody}.
 *
 * A small body with a `Content-Length` (below the stream's high-water mark, the common case) is observed as
 * Node's HTTP parser hands it to the stream, without consuming it: the stream keeps it buffered, untouched,
 * for the next reader. Anything else (chunked, large, already flowing, or partly read) is read to its end
 * with {@link readNodeBody}, and the stream is then given a fresh readable state holding the same bytes.
 * Listeners attached so far are kept.
 *
 * @example
 * ```ts
 * import { peekNodeBody } from "@idempotency/core/node";
 *
 * const bytes = await peekNodeBody(req, 1_048_576);
 * // req still yields the same bytes: express.json() after this middleware parses them as usual
 * ```
 */
export function peekNodeBody(req: IncomingMessage, maxBytes = Number.POSITIVE_INFINITY): Promise<Buffer> {
  if (observable(req, maxBytes)) return observeNodeBody(req);
  return readNodeBody(req, maxBytes).then((bytes) => {
    rearm(req, bytes);
    return bytes;
  });
}

/**
 * Whether the body can be watched arriving instead of read: a plain `Content-Length` within `maxBytes` and
 * below the high-water mark (so the stream buffers all of it without pausing the socket), on a stream that
 * nobody has started reading, paused or watched, and that has received nothing yet.
 */
function observable(req: IncomingMessage, maxBytes: number): boolean {
  const declared = req.headers["content-length"];
  if (declared === undefined || req.headers["transfer-encoding"] !== undefined) return false;
  if (!/^\d{1,9}$/.test(declared)) return false;
  const length = Number(declared);
  if (length === 0 || length > maxBytes || length >= req.readableHighWaterMark) return false;
  if (req.complete || req.readableDidRead || req.readableLength > 0 || req.readableFlowing !== null)
    return false;
  if (req.destroyed || req.push !== Readable.prototype.push) return false;
  return true;
}

/**
 * Collects the chunks Node's HTTP parser pushes into `req` (it calls `req.push(chunk)`, then `req.push(null)`
 * at the end of the message), passing each on unchanged, so the stream's own buffer keeps them for the next
 * reader. A request that ends early (the client left) rejects with `IdempotencyRequestAbortedError`, as reading
 * it would.
 */
function observeNodeBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const push = req.push;
    const chunks: Buffer[] = [];
    let received = 0;
    const stop = () => {
      req.push = push;
      req.off("close", onClose);
      req.off("error", onClose);
    };
    const onClose = () => {
      stop();
      reject(new IdempotencyRequestAbortedError({ cause: "the request closed before its body ended" }));
    };
    req.push = function observe(chunk: unknown, encoding?: BufferEncoding) {
      if (chunk === null) {
        stop();
        resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, received));
      } else {
        // The HTTP parser pushes Buffers; anything else is copied as Node would decode it, and passed on as is.
        const bytes = Buffer.isBuffer(chunk)
          ? chunk
          : typeof chunk === "string"
            ? Buffer.from(chunk, encoding)
            : Buffer.from(chunk as Uint8Array);
        chunks.push(bytes);
        received += bytes.length;
      }
      return push.call(req, chunk, encoding);
    } as typeof req.push;
    req.once("close", onClose);
    req.once("error", onClose);
  });
}

/**
 * Gives a fully read request a fresh readable state holding `bytes`, so later body parsers and handlers see
 * the body as if nobody had read it. Listeners attached so far are kept.
 */
function rearm(req: IncomingMessage, bytes: Uint8Array): void {
  const initReadable = Readable as unknown as (this: IncomingMessage, options: ReadableOptions) => void;
  initReadable.call(req, { read() {} });
  if (bytes.length > 0) req.push(bytes);
  req.push(null);
}

/**
 * Where a binding finds what a body parser that ran before it kept; see {@link nodeRequestBody}.
 *
 * @example
 * ```ts
 * import type { ConsumedBody } from "@idempotency/core/node";
 *
 * const consumed: ConsumedBody = { raw: ctx.request.rawBody, parsed: () => ctx.request.body, hint: "Mount it first." };
 * ```
 */
export interface ConsumedBody {
  /** The raw body a parser kept (`req.rawBody` from a `verify` hook, `ctx.request.rawBody`): bytes or text. */
  raw?: unknown;
  /** What a parser left instead (`req.body`, `ctx.request.body`), read only when no raw body was kept. */
  parsed?: () => unknown;
  /** The end of the message of the `IdempotencyBodyConsumedError` when neither was kept: how to fix it. */
  hint: string;
}

/**
 * The request body as the engine fingerprints it, for a binding on Node's `http`, in one order for every
 * framework: the raw body a parser kept (bytes, or text as UTF-8); else, when nobody has read the stream, the
 * stream's own bytes ({@link peekNodeBody}: it stays readable for the parser and handler after the
 * middleware); else nothing when the request declared no body; else what a parser left (bytes, text as
 * UTF-8, anything else re-serialised as JSON); else `IdempotencyBodyConsumedError` (a body was announced and
 * consumed, but nothing kept it).
 *
 * @example
 * ```ts
 * import { nodeRequestBody } from "@idempotency/core/node";
 *
 * const body = (maxBytes?: number) =>
 *   nodeRequestBody(req, maxBytes, { raw: req.rawBody, parsed: () => req.body, hint: "Mount idempotency() first." });
 * ```
 */
export async function nodeRequestBody(
  req: IncomingMessage,
  maxBytes: number | undefined,
  consumed: ConsumedBody,
): Promise<Uint8Array> {
  const raw = consumed.raw;
  if (raw instanceof Uint8Array) return raw;
  if (typeof raw === "string") return Buffer.from(raw, "utf8");
  if (req.destroyed && !req.complete) throw new IdempotencyRequestAbortedError(); // the client left mid-body
  if (!req.readableDidRead && !req.readableEnded && !req.destroyed) return peekNodeBody(req, maxBytes);
  if (!declaresBody(req)) return EMPTY;
  const parsed = consumed.parsed?.();
  if (parsed instanceof Uint8Array) return parsed;
  if (typeof parsed === "string") return Buffer.from(parsed, "utf8");
  if (parsed !== undefined && parsed !== null) return Buffer.from(JSON.stringify(parsed), "utf8");
  throw new IdempotencyBodyConsumedError(consumed.hint);
}

const EMPTY = new Uint8Array(0);

/**
 * Whether the request announced a body: a non-zero `Content-Length`, or a `Transfer-Encoding`. Tells a
 * request that never had a body from one whose body a parser consumed.
 *
 * @example
 * ```ts
 * import { declaresBody } from "@idempotency/core/node";
 *
 * if (req.readableEnded && declaresBody(req) && req.body === undefined) throw new IdempotencyBodyConsumedError(hint);
 * ```
 */
export function declaresBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  if (length !== undefined) return length.trim() !== "0";
  return req.headers["transfer-encoding"] !== undefined;
}

/**
 * Whether the client's connection closed before the handler could start: the response can never be
 * delivered. A binding that finds this right after its claim releases the claim (`execution.abandon()`) and
 * does not run the handler: nothing ran, so the retry runs once. Running it would hand it a request whose
 * connection is gone, which body parsers take as already read (`body-parser` skips it, leaving `req.body`
 * empty, and `@koa/bodyparser` answers 499). Once the handler has started, a client that leaves changes
 * nothing: its response is stored.
 *
 * @example
 * ```ts
 * import { connectionClosed } from "@idempotency/core/node";
 *
 * if (decision.action === "execute" && connectionClosed(res)) return void decision.execution.abandon();
 * ```
 */
export function connectionClosed(res: {
  destroyed?: unknown;
  writableEnded?: unknown;
  socket?: { destroyed?: unknown } | null;
}): boolean {
  // The socket is destroyed at once; the response learns of it an event later.
  return res.writableEnded !== true && (res.destroyed === true || res.socket?.destroyed === true);
}
