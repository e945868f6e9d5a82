import { IdempotencyBodyConsumedError, type IdempotencyRequest } from "@idempotency/core";
import { declaresBody, nodeHeaders, peekNodeBody, splitRequestTarget } from "@idempotency/core/node";
import type { ParameterizedContext } from "koa";

/** Any Koa context: Koa 2 or 3, with or without a router's or the application's own context type. */
export type AnyContext = ParameterizedContext<unknown, unknown, unknown>;

const EMPTY = new Uint8Array(0);

/**
 * Translates a Koa context into the engine's neutral request. The path is the concrete path the client asked
 * for, taken from `ctx.originalUrl`, so routers' prefixes and mounted sub-apps (which strip `ctx.path`) do
 * not change a record's identity.
 */
export function translateRequest(ctx: AnyContext): IdempotencyRequest {
  const { path, query } = splitRequestTarget(ctx.originalUrl ?? ctx.url);
  let body: Promise<Uint8Array> | undefined;
  return {
    method: ctx.method.toUpperCase(),
    path,
    query,
    // From the raw fields, like WHATWG Headers: Node keeps only the first of some repeated headers.
    headers: nodeHeaders(ctx.req.rawHeaders),
    body: (maxBytes?: number) => {
      body ??= readBody(ctx, maxBytes ?? Number.POSITIVE_INFINITY);
      return body;
    },
    native: ctx,
  };
}

/**
 * The raw body bytes. A body parser that ran before this middleware consumed the stream: `@koa/bodyparser`
 * keeps the text it read as `ctx.request.rawBody` (also `ctx.req.rawBody` with `patchNode`); other parsers
 * leave only what they parsed (`ctx.request.body`: text as UTF-8, anything else re-serialised as JSON, as
 * the Express binding does). Otherwise the stream is read here, and stays readable for the body parser and
 * handler after this middleware.
 */
async function readBody(ctx: AnyContext, maxBytes: number): Promise<Uint8Array> {
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
  return peekNodeBody(req, maxBytes);
}
