import {
  createIdempotency,
  declareNotStarted,
  executionSignal,
  executionTransaction,
  type IdempotencyOptions,
  type PreparedResponse,
} from "@idempotency/core";
import { connectionClosed, groupHeaders } from "@idempotency/core/node";
import type { Middleware, Next } from "koa";
import { captureResponse } from "./capture.js";
import { type AnyContext, translateRequest } from "./request.js";

/**
 * Creates Koa middleware that makes unsafe requests (by default `POST` and `PATCH`) carrying an
 * `Idempotency-Key` header safe to retry: the first request runs and its response is stored, a retry gets the
 * stored response (`Idempotent-Replayed: true`), a retry with another body gets 422, a duplicate while the
 * first still runs gets 409. The options are `@idempotency/core`'s (`store` and `scope` required); an
 * invalid option throws `IdempotencyOptionsError` here, naming it.
 *
 * Mount it app-wide with `app.use`, on a router, or on a single route; when a request meets two of them, the
 * first one that claims it decides and the later ones pass it on. What is stored is
 * what Koa finally sends, after your error handling ran, so a thrown error that your error middleware (or
 * Koa's default handler) turns into a 5xx releases the key and a retry runs again.
 *
 * @example
 * ```ts
 * import Koa, { type ParameterizedContext } from "koa";
 * import { bodyParser } from "@koa/bodyparser";
 * import { MemoryStore } from "@idempotency/core";
 * import { idempotency } from "@idempotency/koa";
 *
 * type State = { user: { id: string; tenantId: string } };
 *
 * const app = new Koa<State>();
 * app.use(authenticate); // sets ctx.state.user before the guard; never scope by a client-chosen header
 * app.use(
 *   idempotency({
 *     store: new MemoryStore(),
 *     scope: (request) => (request.native as ParameterizedContext<State>).state.user.tenantId,
 *   }),
 * );
 * app.use(bodyParser());
 * app.use(async (ctx) => {
 *   ctx.status = 201;
 *   ctx.body = await createOrder(ctx.request.body);
 * });
 * app.listen(3000);
 * ```
 */
export function idempotency(options: IdempotencyOptions): Middleware {
  const engine = createIdempotency(options);
  return async function idempotencyMiddleware(ctx: AnyContext, next: Next): Promise<void> {
    const request = translateRequest(ctx);
    const decision = await engine.handle(request);
    if (decision.action === "pass") {
      await next();
      return;
    }
    if (decision.action === "respond") {
      send(ctx, decision.response);
      return;
    }
    // The client left before the handler could start: nothing ran, so give the key back for its retry.
    if (connectionClosed(ctx.res)) {
      await decision.execution.abandon();
      return;
    }
    const capture = captureResponse(ctx, decision.execution);
    try {
      await next();
    } finally {
      capture.settled(); // before Koa answers what the chain produced (or threw)
    }
  } as Middleware;
}

/**
 * Declares that the current request did nothing (validation or authorisation failed before any side
 * effect): its key is released and nothing is stored, whatever the response, so a corrected retry with the
 * same key runs. Does nothing for a request the middleware does not protect.
 *
 * @example
 * ```ts
 * import { notStarted } from "@idempotency/koa";
 *
 * router.post("/orders", async (ctx) => {
 *   if (!ctx.state.user.canOrder) {
 *     notStarted(ctx);
 *     ctx.status = 403;
 *     ctx.body = { error: "forbidden" };
 *     return;
 *   }
 *   ctx.status = 201;
 *   ctx.body = await createOrder(ctx.request.body);
 * });
 * ```
 */
export function notStarted(ctx: AnyContext): void {
  declareNotStarted(ctx);
}

/**
 * The signal of the current request's idempotency claim, or `undefined` when the middleware did not claim
 * it. It aborts when the handler should stop early: another request took the key over (this result will not
 * be stored), or the handler ran past `maxExecutionMs` (its lease is no longer renewed). `reason` is an
 * `IdempotencyAbortError` whose `code` says which. It does not abort when the client disconnects: the
 * handler's result is still stored for the client's retry.
 *
 * @example
 * ```ts
 * import { idempotencySignal } from "@idempotency/koa";
 *
 * router.post("/payments", async (ctx) => {
 *   ctx.status = 201;
 *   ctx.body = await provider.charge(ctx.request.body, { signal: idempotencySignal(ctx) });
 * });
 * ```
 */
export function idempotencySignal(ctx: AnyContext): AbortSignal | undefined {
  return executionSignal(ctx);
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
 * import { idempotencyTransaction } from "@idempotency/koa";
 *
 * router.post("/orders", async (ctx) => {
 *   const tx = idempotencyTransaction<PoolClient>(ctx) as PoolClient;
 *   const { rows } = await tx.query("INSERT INTO orders (total) VALUES ($1) RETURNING id", [ctx.request.body.total]);
 *   ctx.status = 201;
 *   ctx.body = { id: rows[0].id };
 * });
 * ```
 */
export function idempotencyTransaction<Tx = unknown>(ctx: AnyContext): Tx | undefined {
  return executionTransaction<Tx>(ctx);
}

/** Sends a replay or a problem through Koa, with exactly the engine's status, headers and body. */
function send(ctx: AnyContext, response: PreparedResponse): void {
  ctx.status = response.status;
  const headers = groupHeaders(response.headers);
  for (const [name, value] of headers) ctx.set(name, value);
  const { body } = response;
  ctx.body = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  // Koa labels a Buffer body application/octet-stream when no type is set; the original had none.
  if (!headers.has("content-type")) ctx.remove("Content-Type");
}
