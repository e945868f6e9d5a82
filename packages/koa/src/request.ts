import type { IdempotencyRequest } from "@idempotency/core";
import { nodeHeaders, nodeRequestBody, splitRequestTarget } from "@idempotency/core/node";
import type { ParameterizedContext } from "koa";

/** Any Koa context: Koa 2 or 3, with or without a router's or the application's own context type. */
export type AnyContext = ParameterizedContext<unknown, unknown, unknown>;

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
 * `@koa/bodyparser` keeps the text it read as `ctx.request.rawBody` (also `ctx.req.rawBody` with
 * `patchNode`); other parsers (koa-body) leave only what they parsed, as `ctx.request.body`.
 */
function readBody(ctx: AnyContext, maxBytes: number): Promise<Uint8Array> {
  return nodeRequestBody(ctx.req, maxBytes, {
    raw: (ctx.request as { rawBody?: unknown }).rawBody ?? (ctx.req as { rawBody?: unknown }).rawBody,
    parsed: () => (ctx.request as { body?: unknown }).body,
    hint:
      "Mount idempotency() before the middleware that reads the body, or use @koa/bodyparser (it keeps " +
      "ctx.request.rawBody).",
  });
}
