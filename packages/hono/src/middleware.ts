import {
  createIdempotency,
  declareNotStarted,
  executionSignal,
  executionTransaction,
  type IdempotencyOptions,
  type PreparedResponse,
} from "@idempotency/core";
import { connectionClosed } from "@idempotency/core/node";
import { captureWebResponse } from "@idempotency/core/web";
import type { Context, MiddlewareHandler } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { bodyCutShort, toIdempotencyRequest } from "./request.js";
import { immediateBody } from "./response.js";

/**
 * Creates Hono middleware that makes unsafe requests (POST and PATCH by default) safe to retry with an
 * `Idempotency-Key` header: the first request runs and its response is stored, a retry gets the stored
 * response (`Idempotent-Replayed: true`), a different request under the same key gets 422, a duplicate
 * while the first still runs gets 409, and an unavailable store gets 503.
 *
 * `options` are `@idempotency/core`'s options (`store` and `scope` required); an invalid option throws
 * `IdempotencyOptionsError` here, naming it. Use it per route or app-wide, also inside sub-apps mounted with
 * `app.route()`. Errors thrown by handlers reach the app's `onError` unchanged; whether the outcome is
 * stored is decided on the final status it produced (5xx releases the key so a retry runs again).
 *
 * The middleware itself uses only Web APIs (`Request`, `Response`, `ReadableStream`, `AbortSignal`); where it
 * can run is bounded by `@idempotency/core` (Node-API addon, `node:crypto`), see the README.
 *
 * @example
 * ```ts
 * import { type Context, Hono } from "hono";
 * import { MemoryStore } from "@idempotency/core";
 * import { idempotency } from "@idempotency/hono";
 *
 * type Env = { Variables: { user: { id: string; tenantId: string } } };
 *
 * const app = new Hono<Env>();
 * app.use(authenticate); // c.set("user", …) before the guard; never scope by a client-chosen header
 * app.post(
 *   "/orders",
 *   idempotency({
 *     store: new MemoryStore(),
 *     scope: (request) => (request.native as Context<Env>).get("user").tenantId,
 *   }),
 *   async (c) => c.json(await createOrder(await c.req.json()), 201),
 * );
 * ```
 */
export function idempotency(options: IdempotencyOptions): MiddlewareHandler {
  const engine = createIdempotency(options);

  return async function idempotencyMiddleware(c, next) {
    const decision = await engine.handle(toIdempotencyRequest(c));
    if (decision.action === "pass") {
      await next();
      return;
    }
    if (decision.action === "respond") return send(c, decision.response);

    const { execution } = decision;
    // On @hono/node-server: the client left before the handler could start. Nothing ran, so give the key back.
    if (connectionClosed((c.env as { outgoing?: object } | undefined)?.outgoing ?? {})) {
      await execution.abandon();
      return new Response(null, { status: 499 }); // nobody is there to read it
    }
    // The lease is renewed until the response is captured, whatever the client does: one that gave up and
    // retries must find the key in progress while the handler still runs.
    try {
      await next();
    } catch (error) {
      // Not handled by the app's onError (e.g. a thrown non-Error): there is no response to store.
      await execution.abandon();
      throw error;
    }
    if (!c.finalized) {
      await execution.abandon();
      return;
    }
    if (bodyCutShort(c)) execution.requestAborted?.();
    try {
      const response = c.res;
      const captured = await captureWebResponse(
        response,
        execution,
        () => c.req.raw.signal,
        immediateBody(response),
      );
      // Set over nothing: set over a response, Hono rebuilds the new one around its body as a stream (copying
      // the old one's headers, which the captured response already has), and the server must then read that.
      c.res = undefined;
      c.res = captured;
    } catch (error) {
      // The response body could not be read (already used, or it failed at once): nothing to store.
      await execution.abandon();
      throw error;
    }
  };
}

/**
 * Declares that the current request did nothing (validation or authorisation failed before any side
 * effect): its idempotency claim is released and its response is not stored, whatever its status, so a
 * retry with the same key runs again. Does nothing when the request is not under an idempotency claim.
 *
 * @example
 * ```ts
 * app.post("/orders", idempotency(options), async (c) => {
 *   const body = await c.req.json();
 *   if (!body.item) {
 *     notStarted(c);
 *     return c.json({ error: "item is required" }, 400);
 *   }
 *   return c.json(await createOrder(body), 201);
 * });
 * ```
 */
export function notStarted(c: Context): void {
  declareNotStarted(c);
}

/**
 * The signal of the current request's idempotency claim, or `undefined` when the middleware did not claim
 * it. It aborts when the handler should stop early: another request took the key over (this result will not
 * be stored), or the handler ran past `maxExecutionMs` (its lease is no longer renewed). `reason` is an
 * `IdempotencyAbortError` whose `code` says which. It does not abort when the client disconnects (that is
 * `c.req.raw.signal`): the handler's result is still stored for the client's retry.
 *
 * @example
 * ```ts
 * import { idempotencySignal } from "@idempotency/hono";
 *
 * app.post("/payments", idempotency(options), async (c) => {
 *   const receipt = await provider.charge(await c.req.json(), { signal: idempotencySignal(c) });
 *   return c.json(receipt, 201);
 * });
 * ```
 */
export function idempotencySignal(c: Context): AbortSignal | undefined {
  return executionSignal(c);
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
 * import { idempotencyTransaction } from "@idempotency/hono";
 *
 * app.post("/orders", idempotency({ store, scope, transactional: true }), async (c) => {
 *   const tx = idempotencyTransaction<PoolClient>(c) as PoolClient;
 *   const { total } = await c.req.json();
 *   const { rows } = await tx.query("INSERT INTO orders (total) VALUES ($1) RETURNING id", [total]);
 *   return c.json({ id: rows[0].id }, 201);
 * });
 * ```
 */
export function idempotencyTransaction<Tx = unknown>(c: Context): Tx | undefined {
  return executionTransaction<Tx>(c);
}

/** A replay or a problem, through `c.body` so headers other middleware prepared with `c.header()` apply. */
function send(c: Context, response: PreparedResponse): Response {
  const headers = new Headers();
  for (const [name, value] of response.headers) headers.append(name, value);
  // Statuses come from a handler's response or the engine's problems; the bytes are never shared memory.
  const status = response.status as ContentfulStatusCode;
  if (response.body.length === 0) return c.body(null, { status, headers });
  return c.body(response.body as Uint8Array<ArrayBuffer>, { status, headers });
}
