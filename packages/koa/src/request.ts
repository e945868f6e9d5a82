import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import { IdempotencyBodyConsumedError, type IdempotencyRequest } from "@idempotency/core";
import { declaresBody, nodeHeaders, readNodeBody, splitRequestTarget } from "@idempotency/core/node";
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
  const { path, query } = splitRequestTarget(ctx.originalUrl ?? ctx.url);
  let body: Promise<Uint8Array> | undefined;
  let streamed: Buffer | undefined;
  const request: IdempotencyRequest = {
    method: ctx.method.toUpperCase(),
    path,
    query,
    // From the raw fields, like WHATWG Headers: Node keeps only the first of some repeated headers.
    headers: nodeHeaders(ctx.req.rawHeaders),
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
    throw new IdempotencyBodyConsumedError(
      "Mount idempotency() before the middleware that reads the body, or use @koa/bodyparser (it keeps " +
        "ctx.request.rawBody).",
    );
  }
  const bytes = await readNodeBody(req, maxBytes);
  fromStream(bytes);
  return bytes;
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
