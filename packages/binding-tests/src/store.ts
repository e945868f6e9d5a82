import {
  type BeginArgs,
  type IdempotencyStore,
  IdempotencyStoreError,
  MemoryStore,
  type StoredRecord,
} from "@idempotency/core";

type Method = "begin" | "complete" | "extend" | "release" | "get" | "delete";

/**
 * The table's store: a `MemoryStore` that counts calls, can be switched down (every call throws
 * `IdempotencyStoreError`), and can delay `complete` so a binding that lets the client see the end of the
 * response before the record is completed is caught by an immediate retry.
 *
 * @example
 * ```ts
 * const store = new TableStore();
 * store.down = true; // every call now throws IdempotencyStoreError: the binding answers 503
 * ```
 */
export class TableStore implements IdempotencyStore {
  readonly inner = new MemoryStore();
  readonly calls: Record<Method, number> = {
    begin: 0,
    complete: 0,
    extend: 0,
    release: 0,
    get: 0,
    delete: 0,
  };
  down = false;
  completeDelayMs = 0;

  readonly #callWaiters: Array<{ method: Method; count: number; resolve: () => void }> = [];

  /** Resolves once `method` has been called at least `count` times. */
  whenCalled(method: Method, count: number): Promise<void> {
    if (this.calls[method] >= count) return Promise.resolve();
    return new Promise((resolve) => this.#callWaiters.push({ method, count, resolve }));
  }

  get totalCalls(): number {
    return Object.values(this.calls).reduce((sum, count) => sum + count, 0);
  }

  #enter(method: Method): void {
    this.calls[method]++;
    for (const waiter of [...this.#callWaiters]) {
      if (waiter.method === method && this.calls[method] >= waiter.count) {
        this.#callWaiters.splice(this.#callWaiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
    if (this.down) {
      throw new IdempotencyStoreError(`Store ${method} failed: the table's store is down`, {
        cause: new Error("connect ECONNREFUSED 127.0.0.1:6379"),
      });
    }
  }

  async begin(key: string, args: BeginArgs) {
    this.#enter("begin");
    return this.inner.begin(key, args);
  }
  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number) {
    this.#enter("complete");
    if (this.completeDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.completeDelayMs));
    return this.inner.complete(key, token, response, ttlMs);
  }
  async extend(key: string, token: string, leaseMs: number) {
    this.#enter("extend");
    return this.inner.extend(key, token, leaseMs);
  }
  async release(key: string, token: string) {
    this.#enter("release");
    return this.inner.release(key, token);
  }
  async get(key: string): Promise<StoredRecord | null> {
    this.#enter("get");
    return this.inner.get(key);
  }
  async delete(key: string) {
    this.#enter("delete");
    return this.inner.delete(key);
  }
}
