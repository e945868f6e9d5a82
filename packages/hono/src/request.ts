import {
  IdempotencyBodyConsumedError,
  type IdempotencyRequest,
  IdempotencyRequestAbortedError,
  IdempotencyRequestTooLargeError,
  splitRequestTarget,
} from "@idempotency/core";
import { peekNodeBody, requestCutShort } from "@idempotency/core/node";
import type { Context } from "hono";

/**
 * Translates a Hono context into the core's neutral request. The path and query come from the raw request
 * URL, so they are the concrete, still percent-encoded path (as Express's `req.path` and Koa's `ctx.path`)
 * whether the middleware is global, per route or inside a sub-app mounted with `app.route()`.
 */
export function toIdempotencyRequest(c: Context): IdempotencyRequest {
  const raw = c.req.raw;
  const { path, query } = splitRequestTarget(raw.url);
  let body: Promise<Uint8Array> | undefined;
  return {
    method: raw.method.toUpperCase(),
    path,
    query,
    headers: raw.headers,
    body: (maxBytes?: number) => {
      body ??= readBody(c, maxBytes ?? Number.POSITIVE_INFINITY);
      return body;
    },
    native: c,
  };
}

/**
 * Reads the body bytes without taking them from the handler. An unread body is read from a clone, so the
 * handler can still use `c.req.json()` and friends and also `c.req.raw` (for libraries that take a
 * `Request`); reading stops past `maxBytes`, so at most that much is ever buffered. A body an earlier
 * middleware already read through `c.req` is taken from Hono's body cache.
 */
async function readBody(c: Context, maxBytes: number): Promise<Uint8Array> {
  const raw = c.req.raw;
  const incoming = untouchedIncoming(c);
  if (incoming !== undefined && !raw.bodyUsed) {
    // On @hono/node-server, read the Node request underneath instead of cloning the Request: a clone makes
    // the server build a full Request with a teed stream, where peeking leaves the bytes in Node's stream
    // for the server's own fast body reads (`c.req.json()`) and for `c.req.raw` alike.
    return peekNodeBody(incoming, maxBytes);
  }
  if (!raw.bodyUsed) {
    try {
      return await readLimited(raw.clone(), maxBytes);
    } catch (error) {
      // Cancelling one branch of a teed body waits for the other: cancel the handler's branch too, so the
      // source stops at once and the 413 goes out without reading (or keeping) the rest.
      void raw.body?.cancel().catch(() => {});
      throw error;
    }
  }
  if (Object.keys(c.req.bodyCache).length === 0) {
    throw new IdempotencyBodyConsumedError(
      "Something read it through c.req.raw first: mount idempotency() before that middleware, or read the " +
        "body with c.req.json() / c.req.text() / c.req.arrayBuffer(), which Hono caches.",
    );
  }
  return new Uint8Array(await c.req.arrayBuffer());
}

/**
 * The whole body of `request`, or `IdempotencyRequestTooLargeError` as soon as more than `maxBytes` arrived,
 * or `IdempotencyRequestAbortedError` when the body stream fails before its end.
 */
async function readLimited(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let received = 0;
  for (;;) {
    let next: ReadableStreamReadResult<Uint8Array>;
    try {
      next = await reader.read();
    } catch (error) {
      // The body stream failed: the request ended before its body did (the client left mid-upload).
      throw new IdempotencyRequestAbortedError({ cause: error });
    }
    const { done, value } = next;
    if (done) break;
    received += value.byteLength;
    if (received > maxBytes) {
      void reader.cancel().catch(() => {}); // settles once the other branch is cancelled too (above)
      throw new IdempotencyRequestTooLargeError(maxBytes);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const body = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/**
 * The Node request under a Hono context on `@hono/node-server` (`c.env.incoming`), when nobody has started
 * reading it: its body can then be peeked at (the server reads it lazily, only when the Request's body is
 * asked for). Undefined on any other runtime or server, or once the server has attached its own reader.
 */
type IncomingMessage = Parameters<typeof peekNodeBody>[0];

function untouchedIncoming(c: Context): IncomingMessage | undefined {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming as IncomingMessage | undefined;
  if (
    incoming === undefined ||
    incoming === null ||
    typeof incoming.on !== "function" ||
    typeof incoming.push !== "function" ||
    incoming.readableDidRead !== false ||
    incoming.readableFlowing !== null ||
    incoming.readableEnded ||
    incoming.destroyed
  ) {
    return undefined;
  }
  return incoming;
}

/**
 * Whether the client left before the whole request body arrived. Known on `@hono/node-server`, from its
 * Node request; elsewhere the runtime does not say, and this is `false`.
 */
export function bodyCutShort(c: Context): boolean {
  return requestCutShort(
    (c.env as { incoming?: { destroyed?: unknown; complete?: unknown } } | undefined)?.incoming,
  );
}
