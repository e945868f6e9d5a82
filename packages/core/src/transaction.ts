import { randomUUID } from "node:crypto";
import { encodeResponse } from "./encoding.js";
import {
  IdempotencyAbortError,
  IdempotencyError,
  IdempotencyInProgressError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  toStoreError,
} from "./errors.js";
import type { Emit, IdempotencyEventBase } from "./events.js";
import type { ResolvedOptions } from "./options.js";
import { replayResult, resultResponse } from "./run.js";
import { isTransactionalStore, type TransactionalStore, type TransactionOutcome } from "./store.js";

/**
 * What `idempotency.transaction()` passes to its function beside the transaction.
 *
 * @example
 * ```ts
 * await idempotency.transaction(order.id, async (tx, { key }) => {
 *   await tx.query("INSERT INTO orders (id, total) VALUES ($1, $2)", [key, order.total]);
 * });
 * ```
 */
export interface TransactionContext {
  /** The caller's key, as given to `transaction`. */
  readonly key: string;
  /**
   * Aborts when the function ran past `maxExecutionMs`: the transaction is then rolled back, and the call
   * rejects with the signal's reason, an `IdempotencyAbortError` with code `ERR_IDEMPOTENCY_EXECUTION_LIMIT`.
   * Pass it to long work so it stops. (Synchronous functions, on `SqliteStore`, cannot be interrupted.)
   */
  readonly signal: AbortSignal;
}

/** Everything `transaction` needs from the engine that created it. */
export interface TransactionCall {
  identity: string;
  key: string;
  fingerprint: string;
  waitMs: number;
  base: () => IdempotencyEventBase;
}

/**
 * Checks, before anything runs, that the store has transactions and, for a store whose transactions are
 * synchronous, that `fn` is not an `async` function (its writes after the first `await` would escape the
 * transaction).
 */
export function transactionalStoreOf(
  resolved: ResolvedOptions,
  fn: (...args: never[]) => unknown,
): TransactionalStore<unknown> {
  const store = resolved.store;
  if (!isTransactionalStore(store)) {
    throw new IdempotencyError(
      "ERR_IDEMPOTENCY_NO_TRANSACTIONS",
      `transaction() needs a store that commits your writes with the record in one database transaction (PostgresStore, SqliteStore); ${store.constructor?.name ?? "this store"} has none. Use run() instead.`,
    );
  }
  if (store.synchronousTransactions && fn.constructor?.name === "AsyncFunction") {
    throw new TypeError(
      `${store.constructor?.name ?? "This store"} runs transaction functions synchronously (better-sqlite3 cannot hold a transaction across an await): pass a function that is not async and returns its result directly.`,
    );
  }
  return store;
}

/**
 * Runs `fn(tx)` in one store transaction with the claim and the completed record, and answers as `run()`
 * does: the result when it committed, the stored result for a completed duplicate, an error otherwise.
 */
export async function runTransaction<Tx, T>(
  store: TransactionalStore<Tx>,
  fn: (tx: Tx, context: TransactionContext) => T | Promise<T>,
  call: TransactionCall,
  resolved: ResolvedOptions,
  emit: Emit,
): Promise<Awaited<T>> {
  const { base, key } = call;
  const abort = new AbortController();
  const context: TransactionContext = Object.freeze({ key, signal: abort.signal });
  let limit: ReturnType<typeof setTimeout> | undefined;
  /** Rejects at `maxExecutionMs`: a transaction must not hold its lock for ever under a hung function. */
  const limited = (work: Promise<Uint8Array>): Promise<Uint8Array> => {
    const { maxExecutionMs } = resolved;
    if (!Number.isFinite(maxExecutionMs)) return work;
    return Promise.race([
      work,
      new Promise<never>((_, reject) => {
        limit = setTimeout(() => {
          const reason = new IdempotencyAbortError(
            "ERR_IDEMPOTENCY_EXECUTION_LIMIT",
            `The transaction function ran past maxExecutionMs (${maxExecutionMs} ms); its transaction was rolled back.`,
          );
          emit(() => ({ ...base(), type: "execution-limit", maxExecutionMs }));
          abort.abort(reason);
          failed = { error: reason };
          reject(reason);
        }, maxExecutionMs);
        limit.unref?.();
      }),
    ]).finally(() => clearTimeout(limit));
  };
  // The work's own throw is told apart from the store's by identity: it reaches the caller unchanged.
  let failed: { error: unknown } | undefined;
  let result: Awaited<T> | undefined;
  let stored: ReturnType<typeof resultResponse> | undefined;
  const encode = (value: Awaited<T>): Uint8Array => {
    result = value;
    stored = resultResponse(value);
    const body = stored.body !== null && stored.body.length <= resolved.maxResponseBytes ? stored.body : null;
    stored = { ...stored, body };
    return encodeResponse(stored);
  };
  const fail = (error: unknown): never => {
    failed = { error };
    throw error;
  };
  let outcome: TransactionOutcome;
  try {
    outcome = await store.transaction(
      call.identity,
      {
        token: randomUUID(),
        fingerprint: call.fingerprint,
        leaseMs: resolved.leaseMs,
        ttlMs: resolved.ttlMs,
        allowTakeover: resolved.onLeaseExpired === "run-again",
        waitMs: call.waitMs,
        timeoutMs: resolved.storeTimeoutMs,
      },
      (tx) => {
        let value: T | Promise<T>;
        try {
          value = fn(tx, context);
        } catch (error) {
          return fail(error);
        }
        if (isThenable(value)) {
          if (store.synchronousTransactions) {
            return fail(
              new TypeError(
                "The transaction function returned a promise, but this store's transactions are synchronous: nothing was committed. Return the result directly.",
              ),
            );
          }
          return limited(Promise.resolve(value).then(encode, fail));
        }
        return encode(value as Awaited<T>);
      },
    );
  } catch (error) {
    if (failed !== undefined && error === failed.error) {
      emit(() => ({ ...base(), type: "released", status: null, reason: "no-response" }));
      throw error;
    }
    const storeError = toStoreError("transaction", error);
    emit(() => ({ ...base(), type: "store-error", operation: "transaction", error: storeError }));
    throw storeError;
  }
  switch (outcome.state) {
    case "committed": {
      const response = stored as NonNullable<typeof stored>;
      emit(() => ({ ...base(), type: "claimed", takeover: outcome.takeover }));
      emit(() => ({
        ...base(),
        type: "completed",
        status: response.status,
        bodyBytes: response.body?.length ?? 0,
        bodyStored: response.body !== null,
      }));
      return result as Awaited<T>;
    }
    case "locked":
      emit(() => ({
        ...base(),
        type: "in-progress",
        leaseRemainingMs: resolved.leaseMs,
        waitedMs: call.waitMs,
      }));
      throw new IdempotencyInProgressError(resolved.retryAfterMs, resolved.leaseMs);
    case "completed":
    case "in-flight":
      if (outcome.fingerprint !== call.fingerprint) {
        emit(() => ({ ...base(), type: "key-reused" }));
        throw new IdempotencyKeyReusedError();
      }
      if (outcome.state === "completed") return replayResult(outcome.response, base, emit) as Awaited<T>;
      emit(() => ({
        ...base(),
        type: "in-progress",
        leaseRemainingMs: outcome.leaseRemainingMs,
        waitedMs: 0,
      }));
      if (outcome.leaseRemainingMs <= 0 && resolved.onLeaseExpired === "conflict") {
        throw new IdempotencyKeyLockedError();
      }
      throw new IdempotencyInProgressError(
        Math.max(1, Math.min(resolved.retryAfterMs, outcome.leaseRemainingMs)),
        outcome.leaseRemainingMs,
      );
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === "object" || typeof value === "function") &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
