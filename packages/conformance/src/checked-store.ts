import { type IdempotencyStore, IdempotencyStoreError } from "@idempotency/core";

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
  const call = async <T>(method: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      if (isStoreError(error)) throw error;
      throw new Error(
        `${label}.${method}() threw ${describeThrown(error)}; a store must throw only IdempotencyStoreError`,
        { cause: error },
      );
    }
  };
  return {
    begin: (...args) => call("begin", () => store.begin(...args)),
    complete: (...args) => call("complete", () => store.complete(...args)),
    extend: (...args) => call("extend", () => store.extend(...args)),
    release: (...args) => call("release", () => store.release(...args)),
    get: (...args) => call("get", () => store.get(...args)),
    delete: (...args) => call("delete", () => store.delete(...args)),
  };
}
