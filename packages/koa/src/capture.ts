import type { Execution } from "@idempotency/core";
import { captureNodeResponse } from "@idempotency/core/node";
import type { AnyContext } from "./request.js";

/**
 * Reports what Koa (or a handler bypassing it with `ctx.respond = false`) writes to the Node response to the
 * engine's `execution`, through the core's Node capture: what is stored is exactly what Koa serialised, after
 * every middleware and error handler had its say, so the final status decides. Koa adds two hooks of its own:
 *
 * - when Koa's error handling (`ctx.onerror`) gives up on a response under way (its head went out, or a
 *   stream was piped and failed), no response will ever come, so the claim is released. Before that point an
 *   error reaching `ctx.onerror` is about the connection (ECONNRESET while the handler still runs), and the
 *   handler's result is still awaited;
 * - when the client has left before the response started, Koa would skip (v2) or empty (v3) the response of
 *   a request whose socket is gone, and its error handling would give up on an error the middleware chain
 *   threw (a body parser's 400): it is told the response is still writable, so it serialises the handler's
 *   result (or the error) into the capture as usual and the record is completed. That holds from the
 *   response's `close` event, and from the moment the chain has settled (the returned `settled`): the socket
 *   stops being writable before `close` fires, and a chain that settles in between would otherwise leave
 *   the claim held until `maxExecutionMs`.
 */
export function captureResponse(ctx: AnyContext, execution: Execution): { settled(): void } {
  const capture = captureNodeResponse(ctx.res, execution);
  const onerror = ctx.onerror;
  ctx.onerror = function (this: AnyContext, error: unknown) {
    onerror.call(this, error as Error);
    if (error != null && capture.responding) capture.abandon();
  };
  const keepWritable = () => {
    // Only where Koa's own answer would be false (the socket is gone): redefining the property costs every
    // response a new shape, and Koa reads it in the same turn as the chain settles, with no I/O in between.
    if (!capture.open || ctx.response.writable) return;
    Object.defineProperty(ctx.response, "writable", { configurable: true, get: () => capture.open });
  };
  if (ctx.res.destroyed) keepWritable();
  else ctx.res.once("close", keepWritable);
  return { settled: keepWritable };
}
