import type { IncomingMessage } from "node:http";
import { IdempotencyBodyConsumedError, type IdempotencyRequest } from "@idempotency/core";
import { declaresBody, nodeHeaders, peekNodeBody, splitRequestTarget } from "@idempotency/core/node";

/** The Express request fields this binding reads; plain Node requests work too. */
export interface ExpressRequestLike extends IncomingMessage {
  originalUrl?: string;
  body?: unknown;
  rawBody?: unknown;
}

/** Translates an Express request into the engine's neutral request. */
export function neutralRequest(req: ExpressRequestLike): IdempotencyRequest {
  // originalUrl keeps the mount path (app.use("/api", router)); req.url is relative to the router.
  const { path, query } = splitRequestTarget(req.originalUrl ?? req.url ?? "/");
  let cached: Promise<Uint8Array> | undefined;
  return {
    method: (req.method ?? "GET").toUpperCase(),
    path,
    query,
    // From the raw fields: Node keeps only the first of some duplicated headers, WHATWG Headers joins all.
    headers: nodeHeaders(req.rawHeaders),
    body: (maxBytes?: number) => {
      cached ??= requestBody(req, maxBytes);
      return cached;
    },
    native: req,
  };
}

/**
 * The raw request body. Unread: read it, then make the stream readable again for later body parsers and
 * handlers. Already consumed by a body parser: the bytes it kept (`req.rawBody` from a `verify` hook, or the
 * `Buffer` of `express.raw()`), else the parsed body (text as UTF-8, JSON re-serialised), else an
 * `IdempotencyBodyConsumedError` (a body was announced, but nothing kept it).
 */
async function requestBody(req: ExpressRequestLike, maxBytes?: number): Promise<Uint8Array> {
  if (isBytes(req.rawBody)) return req.rawBody;
  if (!req.readableDidRead && !req.readableEnded && !req.destroyed) {
    return peekNodeBody(req, maxBytes);
  }
  const body = req.body;
  if (isBytes(body)) return body;
  if (typeof body === "string") return Buffer.from(body, "utf8");
  if (body !== undefined && body !== null) return Buffer.from(JSON.stringify(body), "utf8");
  if (!declaresBody(req)) return new Uint8Array(0);
  throw new IdempotencyBodyConsumedError(
    "Mount idempotency() before the middleware that reads the body, or keep the raw body as req.rawBody " +
      "(e.g. express.json({ verify: (req, res, buf) => { req.rawBody = buf } })).",
  );
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}
