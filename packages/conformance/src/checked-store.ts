import { type IdempotencyStore, IdempotencyStoreError, wrapStore } from "@idempotency/core";

/**
 * Whether `error` is an `IdempotencyStoreError`. The `code` check accepts one thrown by a second copy of the
 * core (an adapter bundled against another version), which `instanceof` would reject.
 */
export function isStoreError(error: unknown): boolean {
  if (error instanceof IdempotencyStoreError) return true;
  return error instanceof Error && (error as { code?: unknown }).code === "ERR_IDEMPOTENCY_STORE";
}

function describeThrown(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return `a non-Error value (${String(error)})`;
}

/**
 * Wraps a store so that every case also checks the error contract: a method either answers or throws
 * `IdempotencyStoreError`. Anything else thrown is turned into a failure that names the method.
 */
export function checkedStore(store: IdempotencyStore, label: string): IdempotencyStore {
  return wrapStore(store, async (call, proceed) => {
    try {
      return await proceed();
    } catch (error) {
      if (isStoreError(error)) throw error;
      throw new Error(
        `${label}.${call.operation}() threw ${describeThrown(error)}; a store must throw only IdempotencyStoreError`,
        { cause: error },
      );
    }
  });
}
