/**
 * OUR Express wiring for `@node-idempotency/core`, which is framework-free. It mirrors what the authors'
 * own `@node-idempotency/express` plugin does (packages/plugin-express/src/middleware.ts in
 * mahendraHegde/node-idempotency): `onRequest` before the handler; on a first request, hook `res.send` and
 * call `onResponse` without awaiting it; on a duplicate, replay the stored status, `Content-Type` and body
 * with `Idempotent-Replayed: true`; map the library's errors to 422 / 400 / 409 (+ `Retry-After: 1`) and pass
 * them on with `next(err)`. It runs after `express.json()`, because the library fingerprints the parsed body.
 * Nothing here adds work the plugin does not do. One difference, off the measured path: an error that is not
 * an `IdempotencyError` (a store failure) also goes to `next(err)`, where the plugin leaves the request hanging.
 */
import { Idempotency, IdempotencyError, IdempotencyErrorCodes } from "@node-idempotency/core";
import type { NextFunction, Request, RequestHandler, Response } from "express";

const STATUS_BY_CODE: Record<IdempotencyErrorCodes, number> = {
  [IdempotencyErrorCodes.IDEMPOTENCY_FINGERPRINT_MISSMATCH]: 422,
  [IdempotencyErrorCodes.IDEMPOTENCY_KEY_LEN_EXEEDED]: 400,
  [IdempotencyErrorCodes.IDEMPOTENCY_KEY_MISSING]: 400,
  [IdempotencyErrorCodes.REQUEST_IN_PROGRESS]: 409,
};

/** The plugin stores and replays one response header. */
const CACHED_HEADER = "Content-Type";

type Params = Parameters<Idempotency["onRequest"]>[0];

async function storeResponse(
  idempotency: Idempotency,
  params: Params,
  res: Response,
  payload: unknown,
): Promise<void> {
  const { statusCode } = res;
  const additional: Record<string, unknown> = { statusCode };
  const contentType = res.getHeader(CACHED_HEADER);
  if (contentType) additional[CACHED_HEADER] = contentType;
  let body = payload;
  if (typeof payload === "string" && String(contentType).toLowerCase().includes("application/json")) {
    try {
      body = JSON.parse(payload);
    } catch {
      // The plugin keeps a body that is not valid JSON as it is.
    }
  }
  await idempotency.onResponse(params, { additional, ...(statusCode < 400 ? { body } : { error: body }) });
}

/** Express middleware over an `Idempotency` instance, wired as the authors' Express plugin wires it. */
export function nodeIdempotencyMiddleware(idempotency: Idempotency): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const params: Params = {
      headers: req.headers,
      body: req.body as Record<string, unknown>,
      path: req.url,
      method: req.method,
    };
    try {
      const stored = await idempotency.onRequest(params);
      if (!stored) {
        const send = res.send.bind(res);
        res.send = (body?: unknown): Response => {
          void storeResponse(idempotency, params, res, body);
          return send(body);
        };
        next();
        return;
      }
      const statusCode = stored.additional?.statusCode;
      if (typeof statusCode === "number") res.status(statusCode);
      const contentType = stored.additional?.[CACHED_HEADER];
      if (typeof contentType === "string") res.setHeader(CACHED_HEADER, contentType);
      res.setHeader("Idempotent-Replayed", "true");
      if (stored.body) res.send(stored.body);
      else next(stored.error);
    } catch (error) {
      if (error instanceof IdempotencyError) {
        if (error.code === IdempotencyErrorCodes.REQUEST_IN_PROGRESS) res.setHeader("Retry-After", "1");
        res.status(STATUS_BY_CODE[error.code] ?? 500);
      }
      next(error);
    }
  };
}

export { Idempotency };
