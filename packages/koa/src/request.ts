import type { IncomingMessage } from "node:http";
import { finished, Readable } from "node:stream";
import {
  IdempotencyError,
  type IdempotencyRequest,
  IdempotencyRequestTooLargeError,
} from "@idempotency/core";
import type { ParameterizedContext } from "koa";

/** Any Koa context: Koa 2 or 3, with or without a router's or the application's own context type. */
export type AnyContext = ParameterizedContext<unknown, unknown, unknown>;

const EMPTY = new Uint8Array(0);

/** The neutral request of one Koa request, and how to hand the request on to the handler afterwards. */
export interface TranslatedRequest {
  request: IdempotencyRequest;
  /**
   * Before the handler runs: when the body was read from the stream for the fingerprint, `ctx.req` becomes a
   * readable copy of it. Skipped for requests answered without running (replays, conflicts), which is most of
   * a retry storm.
   */
  handOn(): void;
}

/**
 * Translates a Koa context into the engine's neutral request. The path is the concrete path the client asked
 * for, taken from `ctx.originalUrl`, so routers' prefixes and mounted sub-apps (which strip `ctx.path`) do
 * not change a record's identity.
 */
export function translateRequest(ctx: AnyContext): TranslatedRequest {
  const url = ctx.originalUrl ?? ctx.url;
  const queryAt = url.indexOf("?");
  let body: Promise<Uint8Array> | undefined;
  let values: Map<string, string[]> | undefined;
  let streamed: Buffer | undefined;
  const request: IdempotencyRequest = {
    method: ctx.method.toUpperCase(),
    path: pathOf(queryAt === -1 ? url : url.slice(0, queryAt)),
    query: queryAt === -1 ? "" : url.slice(queryAt + 1),
    headers: {
      get(name: string): string | null {
        // From the raw fields, like WHATWG Headers: Node keeps only the first of some repeated headers.
        values ??= indexRawHeaders(ctx.req.rawHeaders);
        return values.get(name.toLowerCase())?.join(", ") ?? null;
      },
    },
    body: (maxBytes?: number) => {
      body ??= readBody(ctx, maxBytes ?? Number.POSITIVE_INFINITY, (bytes) => {
        streamed = bytes;
      });
      return body;
    },
    native: ctx,
  };
  return {
    request,
    handOn() {
      if (streamed === undefined) return;
      const replay = replayOf(ctx.req, streamed);
      streamed = undefined;
      ctx.req = replay;
      ctx.request.req = replay;
      ctx.response.req = replay;
    },
  };
}

function indexRawHeaders(raw: readonly string[]): Map<string, string[]> {
  const values = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const list = values.get(name);
    if (list) list.push(raw[i + 1] as string);
    else values.set(name, [raw[i + 1] as string]);
  }
  return values;
}

/** The path part of a request target: origin-form as it is, absolute-form (`http://host/p`) reduced to `/p`. */
function pathOf(target: string): string {
  if (target.startsWith("/")) return target;
  try {
    return new URL(target).pathname;
  } catch {
    return target;
  }
}

/**
 * The raw body bytes. A body parser that ran before this middleware consumed the stream: `@koa/bodyparser`
 * keeps the text it read as `ctx.request.rawBody` (also `ctx.req.rawBody` with `patchNode`); other parsers
 * leave only what they parsed (`ctx.request.body`: text as UTF-8, anything else re-serialised as JSON, as
 * the Express binding does). Otherwise the stream is read here, and `fromStream` receives the bytes so the
 * request can be handed on readable.
 */
async function readBody(
  ctx: AnyContext,
  maxBytes: number,
  fromStream: (bytes: Buffer) => void,
): Promise<Uint8Array> {
  const parsed = (ctx.request as { rawBody?: unknown }).rawBody ?? (ctx.req as { rawBody?: unknown }).rawBody;
  if (typeof parsed === "string") return Buffer.from(parsed, "utf8");
  if (parsed instanceof Uint8Array) return parsed;

  const req = ctx.req;
  if (req.readableEnded || req.destroyed || !req.readable) {
    if (!declaresBody(req)) return EMPTY;
    // Another parser (e.g. koa-body) read it and kept only what it parsed.
    const body = (ctx.request as { body?: unknown }).body;
    if (body instanceof Uint8Array) return body;
    if (typeof body === "string") return Buffer.from(body, "utf8");
    if (body !== undefined && body !== null) return Buffer.from(JSON.stringify(body), "utf8");
    throw new IdempotencyError(
      "ERR_IDEMPOTENCY_BODY_CONSUMED",
      "The request body was already read before idempotency() ran, and neither a raw copy " +
        "(ctx.request.rawBody) nor a parsed body (ctx.request.body) was kept, so it cannot be " +
        "fingerprinted. Mount idempotency() before the middleware that reads the body, use " +
        "@koa/bodyparser (it keeps ctx.request.rawBody), or pass a `fingerprint` option that does not " +
        "need the body.",
    );
  }
  const bytes = await readAll(req, maxBytes);
  fromStream(bytes);
  return bytes;
}

/**
 * Reads the request stream to its end, or rejects with `IdempotencyRequestTooLargeError` as soon as more than
 * `maxBytes` arrived: the rest then flows on unread (Node discards it), so an oversized body is never
 * buffered and a keep-alive connection still reaches its next request.
 */
function readAll(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    let cleanup: (() => void) | undefined;
    const settle = (error?: Error | null) => {
      if (settled) return;
      settled = true;
      req.off("data", onData);
      cleanup?.();
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer | string) => {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      received += bytes.length;
      if (received > maxBytes) settle(new IdempotencyRequestTooLargeError(maxBytes));
      else chunks.push(bytes);
    };
    req.on("data", onData);
    req.resume(); // also when an earlier middleware paused it
    cleanup = finished(req, { writable: false }, settle);
  });
}

/** Whether the request announced a body (a non-zero `Content-Length`, or `Transfer-Encoding`). */
function declaresBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  if (length !== undefined) return length.trim() !== "0";
  return req.headers["transfer-encoding"] !== undefined;
}

/**
 * A readable copy of `req` that yields `bytes`. It inherits everything else (headers, url, method, socket,
 * properties earlier middleware set) from the original through the prototype chain, and is still an
 * `IncomingMessage` for `instanceof` checks; only the stream state is its own.
 */
function replayOf(req: IncomingMessage, bytes: Buffer): IncomingMessage {
  const replay = Object.create(req) as IncomingMessage;
  Readable.call(replay as unknown as Readable);
  Object.assign(replay, {
    _read() {},
    // The original already ended; destroying the copy must not reach the socket it shares.
    _destroy(error: Error | null, callback: (error: Error | null) => void) {
      callback(error);
    },
  });
  if (bytes.length > 0) replay.push(bytes);
  replay.push(null);
  return replay;
}
