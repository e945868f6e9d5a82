import { IdempotencyStoreError, toStoreError } from "./errors.js";
import type { IdempotencyStore, StoreCallOptions } from "./store.js";
import { wrapStore } from "./wrap-store.js";

/**
 * The store as the engine calls it: every call bounded by `storeTimeoutMs`, which the store also receives
 * (its last argument) so that one that enforces deadlines where it applies the call uses the same one, and
 * every failure (a rejection, a synchronous throw, a timeout) an `IdempotencyStoreError`. A call that times
 * out counts as failed; a store that cannot refuse to apply it late leaves a lease that expires on its own.
 */
export function guardStore(store: IdempotencyStore, timeoutMs: number): IdempotencyStore {
  const deadline: StoreCallOptions = Object.freeze({ timeoutMs });
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
  return wrapStore(store, (call, proceed) => guard(call.operation, () => proceed(deadline)));
}
