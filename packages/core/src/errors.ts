/**
 * Base class of every error this library throws. `code` is stable across releases: match on it, not on the
 * message.
 *
 * @example
 * ```ts
 * import { IdempotencyError } from "@idempotency/core";
 *
 * try {
 *   await doWork();
 * } catch (error) {
 *   if (error instanceof IdempotencyError) console.error(error.code, error.message);
 *   throw error;
 * }
 * ```
 */
export class IdempotencyError extends Error {
  /** A stable, machine-readable identifier such as `ERR_IDEMPOTENCY_STORE`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * An option passed to `createIdempotency`, a store constructor or a binding is invalid. Thrown at
 * construction, never per request; `option` names the offending option.
 *
 * @example
 * ```ts
 * import { createIdempotency, IdempotencyOptionsError, MemoryStore } from "@idempotency/core";
 *
 * try {
 *   createIdempotency({ store: new MemoryStore(), scope: "global", leaseMs: -1 });
 * } catch (error) {
 *   if (error instanceof IdempotencyOptionsError) console.error(error.option); // "leaseMs"
 * }
 * ```
 */
export class IdempotencyOptionsError extends IdempotencyError {
  /** The name of the invalid option, e.g. `"leaseMs"`. */
  readonly option: string;

  constructor(option: string, message: string) {
    super("ERR_IDEMPOTENCY_OPTIONS", `Invalid option "${option}": ${message}`);
    this.option = option;
  }
}

/**
 * A store could not answer (connection lost, timeout, corrupt data). Store adapters throw only this error,
 * with the underlying failure as `cause`; a `false` from `complete`/`extend`/`release` is an answer, not an
 * error.
 *
 * @example
 * ```ts
 * import { IdempotencyStoreError } from "@idempotency/core";
 *
 * async function get(key: string) {
 *   try {
 *     return await redis.getBuffer(key);
 *   } catch (cause) {
 *     throw new IdempotencyStoreError("Redis GET failed", { cause });
 *   }
 * }
 * ```
 */
export class IdempotencyStoreError extends IdempotencyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_IDEMPOTENCY_STORE", message, options);
  }
}

/** Wraps anything a store threw into an `IdempotencyStoreError`, keeping one that already is. */
export function toStoreError(operation: string, error: unknown): IdempotencyStoreError {
  if (error instanceof IdempotencyStoreError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  return new IdempotencyStoreError(`Store ${operation} failed: ${reason}`, { cause: error });
}
