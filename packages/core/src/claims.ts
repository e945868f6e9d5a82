import type { Execution } from "./execution.js";

const CLAIMS = Symbol.for("@idempotency/core:claims");

/**
 * The execution that claimed each framework request (`native`), shared by every engine and by both builds
 * (ESM and CommonJS) of this module through a registered symbol. It serves two rules: middleware mounted twice
 * on one request (app-wide and on a route) must not claim it again, which would answer its own 409, so later
 * engines pass it through; and a binding's `notStarted(<framework request>)` finds the claim here.
 */
const registry = globalThis as { [CLAIMS]?: WeakMap<object, Execution> };
export const claims = registry[CLAIMS] ?? new WeakMap<object, Execution>();
registry[CLAIMS] = claims;

export function isObject(native: unknown): native is object {
  return (typeof native === "object" || typeof native === "function") && native !== null;
}

/**
 * Declares that the handler of a claimed framework request did nothing yet (validation or authorisation
 * failed before any side effect): its claim is released and nothing is stored, whatever the status. `native`
 * is the framework's own request object the binding passed as `IdempotencyRequest.native` (Express `req`,
 * Hono `c`, Koa `ctx`). Does nothing for a request no engine claimed. Bindings export it as `notStarted`.
 *
 * @example
 * ```ts
 * import { declareNotStarted } from "@idempotency/core";
 *
 * export function notStarted(ctx: Context): void {
 *   declareNotStarted(ctx);
 * }
 * ```
 */
export function declareNotStarted(native: unknown): void {
  if (isObject(native)) claims.get(native)?.notStarted();
}

/**
 * The signal of the claim an engine holds for a framework request (`native`, as for
 * {@link declareNotStarted}), or `undefined` when no engine claimed it. It aborts when the handler should stop
 * early: the lease was lost to another request, or the handler ran past `maxExecutionMs`. Bindings export it
 * as `idempotencySignal`.
 *
 * @example
 * ```ts
 * import { executionSignal } from "@idempotency/core";
 *
 * export function idempotencySignal(ctx: Context): AbortSignal | undefined {
 *   return executionSignal(ctx);
 * }
 * ```
 */
export function executionSignal(native: unknown): AbortSignal | undefined {
  return isObject(native) ? claims.get(native)?.signal : undefined;
}

/**
 * The store transaction an engine created with `transactional: true` holds for a framework request
 * (`native`, as for {@link declareNotStarted}): what the handler writes its effects through (a node-postgres
 * `PoolClient` for `PostgresStore`), or `undefined` when no transactional engine claimed the request. Name
 * its type as `Tx`. Bindings export it as `idempotencyTransaction`.
 *
 * @example
 * ```ts
 * import { executionTransaction } from "@idempotency/core";
 *
 * export function idempotencyTransaction<Tx = unknown>(ctx: Context): Tx | undefined {
 *   return executionTransaction<Tx>(ctx);
 * }
 * ```
 */
export function executionTransaction<Tx = unknown>(native: unknown): Tx | undefined {
  if (!isObject(native)) return undefined;
  return (claims.get(native) as { tx?: Tx } | undefined)?.tx;
}
