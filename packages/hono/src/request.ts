import type { IdempotencyRequest } from "@idempotency/core";
import type { Context } from "hono";

/**
 * Translates a Hono context into the core's neutral request. The path and query come from the raw request
 * URL, so they are the concrete, still percent-encoded path (as Express's `req.path` and Koa's `ctx.path`)
 * whether the middleware is global, per route or inside a sub-app mounted with `app.route()`.
 */
export function toIdempotencyRequest(c: Context): IdempotencyRequest {
  const raw = c.req.raw;
  const { path, query } = splitUrl(raw.url);
  let body: Promise<Uint8Array> | undefined;
  return {
    method: raw.method.toUpperCase(),
    path,
    query,
    headers: raw.headers,
    body: () => {
      body ??= readBody(c);
      return body;
    },
    native: c,
  };
}

/** Splits an absolute request URL into its raw path and its raw query string (without `?`). */
export function splitUrl(url: string): { path: string; query: string } {
  const scheme = url.indexOf("://");
  const start = url.indexOf("/", scheme === -1 ? 0 : scheme + 3);
  if (start === -1) return { path: "/", query: "" };
  const hash = url.indexOf("#", start);
  const end = hash === -1 ? url.length : hash;
  const question = url.indexOf("?", start);
  if (question === -1 || question > end) return { path: url.slice(start, end), query: "" };
  return { path: url.slice(start, question), query: url.slice(question + 1, end) };
}

/**
 * Reads the body bytes without taking them from the handler. An unread body is read from a clone, so the
 * handler can still use `c.req.json()` and friends and also `c.req.raw` (for libraries that take a
 * `Request`). A body an earlier middleware already read through `c.req` is taken from Hono's body cache.
 */
async function readBody(c: Context): Promise<Uint8Array> {
  const raw = c.req.raw;
  if (!raw.bodyUsed) return new Uint8Array(await raw.clone().arrayBuffer());
  if (Object.keys(c.req.bodyCache).length === 0) {
    throw new TypeError(
      "@idempotency/hono cannot fingerprint the request body: something read it through c.req.raw before the " +
        "idempotency middleware ran. Mount idempotency() before that middleware, or read the body with " +
        "c.req.json() / c.req.text() / c.req.arrayBuffer(), which Hono caches.",
    );
  }
  return new Uint8Array(await c.req.arrayBuffer());
}
