import { IdempotencyStoreError, toStoreError } from "./errors.js";
import type { IdempotencyStore, StoreCallOptions } from "./store.js";

/**
 * The store as the engine calls it: every call bounded by `storeTimeoutMs`, which the store also receives
 * (its last argument) so that one that enforces deadlines where it applies the call uses the same one, and
 * every failure (a rejection, a synchronous throw, a timeout) an `IdempotencyStoreError`. A call that times
 * out counts as failed; a store that cannot refuse to apply it late leaves a lease that expires on its own.
 */
export function guardStore(store: IdempotencyStore, timeoutMs: number): IdempotencyStore {
  const call: StoreCallOptions = Object.freeze({ timeoutMs });
  function guard<R>(operation: string, run: () => Promise<R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new IdempotencyStoreError(
            `Store ${operation} did not answer within ${timeoutMs} ms (storeTimeoutMs); treated as failed.`,
          ),
        );
      }, timeoutMs);
      const settle = (fn: () => void) => {
        clearTimeout(timer);
        fn();
      };
      try {
        run().then(
          (value) => settle(() => resolve(value)),
          (error: unknown) => settle(() => reject(toStoreError(operation, error))),
        );
      } catch (error) {
        settle(() => reject(toStoreError(operation, error)));
      }
    });
  }
  return {
    begin: (key, args) => guard("begin", () => store.begin(key, args, call)),
    complete: (key, token, response, ttlMs) =>
      guard("complete", () => store.complete(key, token, response, ttlMs, call)),
    extend: (key, token, leaseMs) => guard("extend", () => store.extend(key, token, leaseMs, call)),
    release: (key, token) => guard("release", () => store.release(key, token, call)),
    get: (key) => guard("get", () => store.get(key, call)),
    delete: (key) => guard("delete", () => store.delete(key, call)),
  };
}
