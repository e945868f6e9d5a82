import type { KnownBody } from "@idempotency/core/web";

const encoder = new TextEncoder();

/**
 * The body of a `Response` from `@hono/node-server`'s own `Response` class (the global one on that server),
 * read without turning it into a full `Response`: that class keeps what `c.json()`, `c.text()` and
 * `c.body(bytes)` answer as `[status, body, headers]` under a symbol described "cache", and builds the real
 * `Response` (a `ReadableStream` over the body) only when something reads `body`, `statusText` or the like.
 * The server itself then writes such a response with `end(body)` and no reason phrase, so `statusText` is "".
 *
 * Anything else (another runtime, a stream, a `Response` already built, a shape this does not recognise)
 * gives `undefined`, and the body is read through its stream as on any runtime.
 */
export function immediateBody(response: Response): KnownBody | undefined {
  for (const symbol of Object.getOwnPropertySymbols(response)) {
    if (symbol.description !== "cache") continue;
    const cache: unknown = (response as unknown as Record<symbol, unknown>)[symbol];
    if (!Array.isArray(cache) || cache.length !== 3 || cache[0] !== response.status) return undefined;
    const body: unknown = cache[1];
    if (typeof body === "string") return { body: encoder.encode(body), statusText: "" };
    if (body instanceof Uint8Array) return { body, statusText: "" };
    if (body === null) return { body: null, statusText: "" };
    return undefined;
  }
  return undefined;
}
