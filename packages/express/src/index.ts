import type { IncomingMessage, ServerResponse } from "node:http";
import {
  createIdempotency,
  declareNotStarted,
  executionSignal,
  executionTransaction,
  type IdempotencyOptions,
} from "@idempotency/core";
import { captureNodeResponse, connectionClosed, groupHeaders } from "@idempotency/core/node";
import { type ExpressRequestLike, neutralRequest } from "./request.js";

export type { IdempotencyOptions } from "@idempotency/core";

/**
 * An Express (4 or 5) middleware function. Typed on Node's request and response so it fits `app.use`,
 * `router.use` and route handler lists of both majors without depending on `@types/express`.
 *
 * @example
 * ```ts
 * const guard: IdempotencyMiddleware = idempotency({ store, scope: "global" });
 * app.use("/api", guard);
 * ```
 */
export type IdempotencyMiddleware = (
  req: IncomingMessage,
  res: ServerResponse,
  next: (error?: unknown) => void,
) => void;

/**
 * Creates Express middleware that makes unsafe requests (POST and PATCH by default) safe to retry with an
 * `Idempotency-Key` header: the first request runs and its response is stored, a retry gets the stored
 * response with `Idempotent-Replayed: true`, a different request under the same key gets 422, a duplicate
 * while the first runs gets 409. Takes the core's options (`store` and `scope` required); invalid options
 * throw `IdempotencyOptionsError` here, not per request.
 *
 * Mount it per route, app-wide, or on a router; put it **before** body parsers so the fingerprint sees the
 * exact request bytes (it leaves the body readable for them). Errors from handlers reach your error handlers
 * unchanged; the status they send decides whether the outcome is stored.
 *
 * @example
 * ```ts
 * import express, { type Request } from "express";
 * import { MemoryStore } from "@idempotency/core";
 * import { idempotency } from "@idempotency/express";
 *
 * type AuthenticatedRequest = Request & { user: { id: string; tenantId: string } };
 *
 * const app = express();
 * app.use(authenticate); // sets req.user before the guard; never scope by a client-chosen header
 * app.post(
 *   "/orders",
 *   idempotency({
 *     store: new MemoryStore(),
 *     scope: (request) => (request.native as AuthenticatedRequest).user.tenantId,
 *   }),
 *   express.json(),
 *   (req, res) => res.status(201).json(createOrder(req.body)),
 * );
 * ```
 */
export function idempotency(options: IdempotencyOptions): IdempotencyMiddleware {
  const engine = createIdempotency(options);

  return function idempotencyMiddleware(req, res, next) {
    engine
      .handle(neutralRequest(req as ExpressRequestLike))
      .then((decision) => {
        if (decision.action === "pass") return next();
        if (decision.action === "respond") {
          const { status, headers, body } = decision.response;
          for (const [name, value] of groupHeaders(headers)) res.setHeader(name, value);
          res.statusCode = status;
          res.end(body); // the head goes out implicitly, through any wrapper an outer middleware installed
          return;
        }
        const { execution } = decision;
        // The client left before the handler could start: nothing ran, so give the key back for its retry.
        if (connectionClosed(res)) return void execution.abandon();
        captureNodeResponse(res, execution);
        next();
      })
      .catch((error: unknown) => next(error)); // scope/fingerprint functions, or a replay Node refused
  };
}

/**
 * Declares that this request did nothing yet (validation or authorisation failed before any side effect):
 * its claim is released and its response is not stored, whatever the status, so a retry with the same key
 * runs again. Call it before or while sending the response. A no-op for requests the middleware did not
 * claim (no key, method not protected).
 *
 * @example
 * ```ts
 * import { notStarted } from "@idempotency/express";
 *
 * app.post("/orders", idempotency(options), express.json(), (req, res) => {
 *   if (!req.body.item) {
 *     notStarted(req);
 *     return res.status(422).json({ error: "item is required" });
 *   }
 *   res.status(201).json(createOrder(req.body));
 * });
 * ```
 */
export function notStarted(req: IncomingMessage): void {
  declareNotStarted(req);
}

/**
 * The signal of this request's idempotency claim, or `undefined` when the middleware did not claim it. It
 * aborts when the handler should stop early: another request took the key over (this result will not be
 * stored), or the handler ran past `maxExecutionMs` (its lease is no longer renewed). `reason` is an
 * `IdempotencyAbortError` whose `code` says which. It does not abort when the client disconnects: the handler's
 * result is still stored for the client's retry.
 *
 * @example
 * ```ts
 * import { idempotencySignal } from "@idempotency/express";
 *
 * app.post("/payments", idempotency(options), express.json(), async (req, res) => {
 *   const receipt = await provider.charge(req.body, { signal: idempotencySignal(req) });
 *   res.status(201).json(receipt);
 * });
 * ```
 */
export function idempotencySignal(req: IncomingMessage): AbortSignal | undefined {
  return executionSignal(req);
}

/**
 * The database transaction of this request's claim, when the middleware was created with
 * `transactional: true` (on `PostgresStore`: a node-postgres `PoolClient` between `BEGIN` and `COMMIT`), or
 * `undefined` when it did not claim the request. Write the request's effects through it: they commit
 * together with the stored response, or not at all (a 5xx, `notStarted`, a crash, a failed commit).
 *
 * @example
 * ```ts
 * import type { PoolClient } from "pg";
 * import { idempotencyTransaction } from "@idempotency/express";
 *
 * app.post("/orders", idempotency({ store, scope, transactional: true }), express.json(), async (req, res) => {
 *   const tx = idempotencyTransaction<PoolClient>(req) as PoolClient;
 *   const { rows } = await tx.query("INSERT INTO orders (total) VALUES ($1) RETURNING id", [req.body.total]);
 *   res.status(201).json({ id: rows[0].id });
 * });
 * ```
 */
export function idempotencyTransaction<Tx = unknown>(req: IncomingMessage): Tx | undefined {
  return executionTransaction<Tx>(req);
}
