import type { IncomingMessage } from "node:http";
import type { IdempotencyRequest } from "@idempotency/core";
import { nodeHeaders, nodeRequestBody, splitRequestTarget } from "@idempotency/core/node";

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

/** Express's body parsers keep the raw body only through a `verify` hook; `express.raw()` leaves a `Buffer`. */
function requestBody(req: ExpressRequestLike, maxBytes?: number): Promise<Uint8Array> {
  return nodeRequestBody(req, maxBytes, {
    raw: req.rawBody,
    parsed: () => req.body,
    hint:
      "Mount idempotency() before the middleware that reads the body, or keep the raw body as req.rawBody " +
      "(e.g. express.json({ verify: (req, res, buf) => { req.rawBody = buf } })).",
  });
}
