import type { BeginArgs, BeginResult, IdempotencyStore, StoreCallOptions, StoredRecord } from "./store.js";

/**
 * One call to a wrapped store, as {@link wrapStore} hands it to the interceptor: which operation, its
 * arguments by name, and the caller's deadline (the last argument) when it gave one.
 *
 * @example
 * ```ts
 * const describe = (call: StoreCall) =>
 *   call.operation === "complete" ? `complete ${call.key} (${call.response?.byteLength ?? 0} bytes)` : call.operation;
 * ```
 */
export type StoreCall =
  | {
      readonly operation: "begin";
      readonly key: string;
      readonly args: BeginArgs;
      readonly options?: StoreCallOptions;
    }
  | {
      readonly operation: "complete";
      readonly key: string;
      readonly token: string;
      readonly response: Uint8Array | null;
      readonly ttlMs: number;
      readonly options?: StoreCallOptions;
    }
  | {
      readonly operation: "extend";
      readonly key: string;
      readonly token: string;
      readonly leaseMs: number;
      readonly options?: StoreCallOptions;
    }
  | {
      readonly operation: "release";
      readonly key: string;
      readonly token: string;
      readonly options?: StoreCallOptions;
    }
  | { readonly operation: "get"; readonly key: string; readonly options?: StoreCallOptions }
  | { readonly operation: "delete"; readonly key: string; readonly options?: StoreCallOptions };

/**
 * The name of one of a store's six operations.
 *
 * @example
 * ```ts
 * const counts: Record<StoreOperation, number> = { begin: 0, complete: 0, extend: 0, release: 0, get: 0, delete: 0 };
 * ```
 */
export type StoreOperation = StoreCall["operation"];

/**
 * What {@link wrapStore} calls for every operation: `proceed(options)` runs the call on the wrapped store
 * with the same arguments and `options` as its deadline (default: the caller's), and the interceptor's
 * answer is the call's answer. It may also answer or throw without proceeding.
 *
 * @example
 * ```ts
 * const timed: StoreInterceptor = async (call, proceed) => {
 *   const started = performance.now();
 *   try {
 *     return await proceed();
 *   } finally {
 *     histogram.record(performance.now() - started, { operation: call.operation });
 *   }
 * };
 * ```
 */
export type StoreInterceptor = (
  call: StoreCall,
  proceed: (options?: StoreCallOptions) => Promise<unknown>,
) => Promise<unknown>;

/**
 * A store that runs every operation of `store` through `intercept`: the one way to add behaviour around a
 * store (metrics, logging, deadlines, fault injection) without forwarding its six methods by hand. `close`
 * is forwarded untouched. The interceptor must answer with what the operation returns (or what `proceed`
 * gave it); the wrapper does not check.
 *
 * @example
 * ```ts
 * import { createIdempotency, wrapStore } from "@idempotency/core";
 *
 * const logged = wrapStore(store, async (call, proceed) => {
 *   const answer = await proceed();
 *   logger.debug({ operation: call.operation, key: call.key }, "idempotency store call");
 *   return answer;
 * });
 * const idempotency = createIdempotency({ store: logged, scope: (request) => request.principal });
 * ```
 */
export function wrapStore(store: IdempotencyStore, intercept: StoreInterceptor): IdempotencyStore {
  const wrapped: IdempotencyStore = {
    begin: (key, args, options) =>
      intercept({ operation: "begin", key, args, options }, (given = options) =>
        store.begin(key, args, given),
      ) as Promise<BeginResult>,
    complete: (key, token, response, ttlMs, options) =>
      intercept({ operation: "complete", key, token, response, ttlMs, options }, (given = options) =>
        store.complete(key, token, response, ttlMs, given),
      ) as Promise<boolean>,
    extend: (key, token, leaseMs, options) =>
      intercept({ operation: "extend", key, token, leaseMs, options }, (given = options) =>
        store.extend(key, token, leaseMs, given),
      ) as Promise<boolean>,
    release: (key, token, options) =>
      intercept({ operation: "release", key, token, options }, (given = options) =>
        store.release(key, token, given),
      ) as Promise<boolean>,
    get: (key, options) =>
      intercept({ operation: "get", key, options }, (given = options) =>
        store.get(key, given),
      ) as Promise<StoredRecord | null>,
    delete: (key, options) =>
      intercept({ operation: "delete", key, options }, (given = options) =>
        store.delete(key, given),
      ) as Promise<boolean>,
  };
  if (store.close !== undefined) wrapped.close = () => (store.close as () => Promise<void>).call(store);
  return wrapped;
}
