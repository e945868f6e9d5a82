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

/**
 * Thrown by `idempotency.run()` when a call with the same key is still running (and `waitMs` ran out).
 * `retryAfterMs` is when to try again: the engine's `retryAfterMs` hint (default 1 s), or the time left on the
 * running call's lease when that is shorter.
 *
 * @example
 * ```ts
 * try {
 *   await idempotency.run(message.id, handle);
 * } catch (error) {
 *   if (error instanceof IdempotencyInProgressError) return message.retryIn(error.retryAfterMs);
 *   throw error;
 * }
 * ```
 */
export class IdempotencyInProgressError extends IdempotencyError {
  /** How long to wait before retrying: the engine's `retryAfterMs`, or the lease left when shorter. */
  readonly retryAfterMs: number;
  /** Milliseconds left on the running call's lease (it is renewed while that call runs). */
  readonly leaseRemainingMs: number;

  constructor(retryAfterMs: number, leaseRemainingMs: number = retryAfterMs) {
    super(
      "ERR_IDEMPOTENCY_IN_PROGRESS",
      `A call with this key is still running; retry in ${retryAfterMs} ms to get its result.`,
    );
    this.retryAfterMs = retryAfterMs;
    this.leaseRemainingMs = leaseRemainingMs;
  }
}

/**
 * Thrown by `idempotency.run()` when a call with this key stopped without a result (its process died, its
 * lease expired) and `onLeaseExpired` is `"conflict"`: the key stays locked until its record's TTL ends, so
 * retrying it is pointless. Use a new key for a new attempt, or resolve the call by hand.
 *
 * @example
 * ```ts
 * try {
 *   await idempotency.run(payment.id, charge);
 * } catch (error) {
 *   if (error instanceof IdempotencyKeyLockedError) return alertOperator(payment.id); // never retried
 *   throw error;
 * }
 * ```
 */
export class IdempotencyKeyLockedError extends IdempotencyError {
  constructor() {
    super(
      "ERR_IDEMPOTENCY_KEY_LOCKED",
      'A call with this key stopped without a result, and onLeaseExpired is "conflict": the key stays locked ' +
        "until its record expires. Do not retry it; use a new key for a new attempt.",
    );
  }
}

/**
 * The `reason` of the signal a protected handler gets (`context.signal` under `run()`, the bindings'
 * `idempotencySignal(...)`) when it aborts: `code` `ERR_IDEMPOTENCY_LEASE_LOST` when another request took the
 * key over (this one's result will not be stored), or `ERR_IDEMPOTENCY_EXECUTION_LIMIT` when the handler ran
 * past `maxExecutionMs` and the engine stopped renewing its lease (another request may take the key over once
 * the lease ends). Stop early if you can.
 *
 * @example
 * ```ts
 * await idempotency.run(job.id, async ({ signal }) => {
 *   signal.addEventListener("abort", () => {
 *     const reason = signal.reason as IdempotencyAbortError;
 *     logger.warn({ code: reason.code }, "stopping: the claim on this job is ending");
 *   });
 *   return work(job, { signal });
 * });
 * ```
 */
export class IdempotencyAbortError extends IdempotencyError {
  constructor(code: "ERR_IDEMPOTENCY_LEASE_LOST" | "ERR_IDEMPOTENCY_EXECUTION_LIMIT", message: string) {
    super(code, message);
    this.name = "AbortError";
  }
}

/**
 * Thrown by `idempotency.run()` when the key was already used with a different fingerprint.
 *
 * @example
 * ```ts
 * await idempotency.run("order-1", fn, { fingerprint: "amount=10" });
 * await idempotency.run("order-1", fn, { fingerprint: "amount=20" }); // throws IdempotencyKeyReusedError
 * ```
 */
export class IdempotencyKeyReusedError extends IdempotencyError {
  constructor() {
    super(
      "ERR_IDEMPOTENCY_KEY_REUSED",
      "This key was already used for a call with a different fingerprint; use a new key for a different call.",
    );
  }
}

/**
 * Thrown by `idempotency.run()` for a key that is not a non-empty string of at most `maxKeyLength`
 * characters.
 *
 * @example
 * ```ts
 * await idempotency.run("", fn); // throws IdempotencyInvalidKeyError
 * ```
 */
export class IdempotencyInvalidKeyError extends IdempotencyError {
  constructor(message: string) {
    super("ERR_IDEMPOTENCY_INVALID_KEY", message);
  }
}

/**
 * Thrown by `idempotency.run()` for a duplicate of a call that completed but whose result could not be
 * stored: larger than `maxResponseBytes` once serialised, or not JSON-serialisable. The call is not run
 * again.
 *
 * @example
 * ```ts
 * try {
 *   return await idempotency.run(job.id, work);
 * } catch (error) {
 *   if (error instanceof IdempotencyResultNotStoredError) return loadResultFromDatabase(job.id);
 *   throw error;
 * }
 * ```
 */
export class IdempotencyResultNotStoredError extends IdempotencyError {
  constructor() {
    super(
      "ERR_IDEMPOTENCY_RESULT_NOT_STORED",
      "The call with this key completed, but its result was too large or not JSON-serialisable, so it was not " +
        "stored. It will not run again; read its result from where the call wrote it.",
    );
  }
}

/**
 * Rejects `IdempotencyRequest.body(maxBytes)` when the body is longer than `maxBytes`: a binding stops
 * reading there, and the engine answers 413 problem+json instead of buffering an unbounded body.
 *
 * @example
 * ```ts
 * // inside a binding's body(maxBytes) reader:
 * if (received > maxBytes) throw new IdempotencyRequestTooLargeError(maxBytes);
 * ```
 */
export class IdempotencyRequestTooLargeError extends IdempotencyError {
  /** The limit that was exceeded, in bytes. */
  readonly limit: number;

  constructor(limit: number) {
    super(
      "ERR_IDEMPOTENCY_REQUEST_TOO_LARGE",
      `The request body is larger than ${limit} bytes (maxRequestBytes).`,
    );
    this.limit = limit;
  }
}

/**
 * Thrown by a binding's `body()` when the request ended before its body did: the client closed the
 * connection (or the body stream failed) mid-upload. Nothing was claimed or run; the engine answers 400
 * `request-aborted` (the client is usually gone and never sees it) instead of letting the error reach the
 * framework as a 500. A retry with the whole body runs as if this request never came.
 *
 * @example
 * ```ts
 * // inside a binding's body(maxBytes) reader:
 * stream.once("close", () => {
 *   if (!stream.complete) reject(new IdempotencyRequestAbortedError({ cause: "closed mid-body" }));
 * });
 * ```
 */
export class IdempotencyRequestAbortedError extends IdempotencyError {
  constructor(options?: { cause?: unknown }) {
    super(
      "ERR_IDEMPOTENCY_REQUEST_ABORTED",
      "The request ended before its body was complete (the client closed the connection mid-upload), so it was not processed.",
      options,
    );
  }
}

/**
 * Thrown by a binding's `body()` when the request body was read before the idempotency middleware ran and no
 * copy of it (raw or parsed) was kept, so it cannot be fingerprinted. A configuration error: mount the
 * middleware before the body parser, keep the raw body, or use a `fingerprint` that does not need it.
 *
 * @example
 * ```ts
 * throw new IdempotencyBodyConsumedError("Mount idempotency() before the middleware that reads the body.");
 * ```
 */
export class IdempotencyBodyConsumedError extends IdempotencyError {
  constructor(hint: string) {
    super(
      "ERR_IDEMPOTENCY_BODY_CONSUMED",
      `The request body was already read before the idempotency middleware ran, and no copy of it was kept, so it cannot be fingerprinted. ${hint} Or pass a \`fingerprint\` option that does not need the body.`,
    );
  }
}
