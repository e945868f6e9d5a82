import type { ProblemDetails } from "./problem.js";

/**
 * Base class of every error `@idempotency/client` throws. `code` is stable across releases: match on it (or
 * on the class), not on the message.
 *
 * @example
 * ```ts
 * import { IdempotentFetchError, idempotentFetch } from "@idempotency/client";
 *
 * try {
 *   await idempotentFetch("https://api.example.com/orders", { method: "POST", body: "{}" });
 * } catch (error) {
 *   if (error instanceof IdempotentFetchError) console.error(error.code, error.message);
 *   throw error;
 * }
 * ```
 */
export class IdempotentFetchError extends Error {
  /** A stable, machine-readable identifier such as `ERR_IDEMPOTENT_FETCH_GAVE_UP`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * An option passed to `createIdempotentFetch` or `idempotentFetch` is invalid. `createIdempotentFetch` throws
 * it at construction; `idempotentFetch` (and the per-call options of a created fetch) reject with it before
 * anything is sent. `option` names the offending option.
 *
 * @example
 * ```ts
 * import { createIdempotentFetch, IdempotentFetchOptionsError } from "@idempotency/client";
 *
 * try {
 *   createIdempotentFetch({ maxAttempts: 0 });
 * } catch (error) {
 *   if (error instanceof IdempotentFetchOptionsError) console.error(error.option); // "maxAttempts"
 * }
 * ```
 */
export class IdempotentFetchOptionsError extends IdempotentFetchError {
  /** The name of the invalid option, e.g. `"maxAttempts"`. */
  readonly option: string;

  constructor(option: string, message: string) {
    super("ERR_IDEMPOTENT_FETCH_OPTIONS", `Invalid option "${option}": ${message}`);
    this.option = option;
  }
}

/**
 * The request body cannot be sent, let alone resent: a stream that is already locked or read, a `Request`
 * whose body was already used, or a body stream that failed while it was being buffered (`cause` says how).
 * Nothing was sent.
 *
 * @example
 * ```ts
 * import { IdempotentFetchBodyError, idempotentFetch } from "@idempotency/client";
 *
 * try {
 *   await idempotentFetch(url, { method: "POST", body: stream });
 * } catch (error) {
 *   if (error instanceof IdempotentFetchBodyError) console.error("pass a fresh body:", error.message);
 * }
 * ```
 */
export class IdempotentFetchBodyError extends IdempotentFetchError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_IDEMPOTENT_FETCH_BODY", message, options);
  }
}

/**
 * The server answered 422 because this idempotency key was already used for a different request (another
 * body, query or path). A bug in the caller, never retried: send a new key for a new operation, or resend
 * exactly the original request to get its result. `response` is the 422 itself, its body unread.
 *
 * @example
 * ```ts
 * import { IdempotencyKeyReusedError, idempotentFetch } from "@idempotency/client";
 *
 * try {
 *   await idempotentFetch(url, { method: "POST", body }, { key: order.id });
 * } catch (error) {
 *   if (error instanceof IdempotencyKeyReusedError) console.error(error.problem?.detail);
 *   throw error;
 * }
 * ```
 */
export class IdempotencyKeyReusedError extends IdempotentFetchError {
  /** The key that was reused. */
  readonly idempotencyKey: string;
  /** The server's 422 response; its body is unread. */
  readonly response: Response;
  /** The parsed `application/problem+json` body. */
  readonly problem: ProblemDetails;
  /** How many attempts were sent, this one included. */
  readonly attempts: number;

  constructor(details: {
    idempotencyKey: string;
    response: Response;
    problem: ProblemDetails;
    attempts: number;
  }) {
    super(
      "ERR_IDEMPOTENCY_KEY_REUSED",
      `The server refused the request (422): the idempotency key ${JSON.stringify(details.idempotencyKey)} was ` +
        "already used for a different request. Use a new key for a new operation, or resend exactly the " +
        `original request to get its result.${details.problem.detail ? ` Server: ${details.problem.detail}` : ""}`,
    );
    this.idempotencyKey = details.idempotencyKey;
    this.response = details.response;
    this.problem = details.problem;
    this.attempts = details.attempts;
  }
}

/**
 * The server answered 409 `key-locked` (`PROBLEM_TYPES.keyLocked`): the first request with this key stopped
 * without a result (its process died, or it was presumed hung), and the server never runs such a request
 * twice, so the key stays locked until its record expires. A definitive answer, never retried whatever
 * `retryOn` says: retrying, now or later, only gets the same 409. Whether the operation took effect is
 * unknown; find out by hand (read the resource it would have created, ask the service), and use a new key
 * for a new attempt. Like {@link IdempotencyKeyReusedError} it is the server refusing this key, so it is not
 * an {@link IdempotentFetchGaveUpError} (whose catch blocks retry later with the same key) nor an
 * {@link IdempotencyInProgressError}. `response` is the 409 itself, its body unread.
 *
 * @example
 * ```ts
 * import { IdempotencyKeyLockedError, idempotentFetch } from "@idempotency/client";
 *
 * try {
 *   await idempotentFetch(url, { method: "POST", body }, { key: `payment-${invoice.id}` });
 * } catch (error) {
 *   if (error instanceof IdempotencyKeyLockedError) return alertOperator(invoice.id, error.message); // never retried
 *   throw error;
 * }
 * ```
 */
export class IdempotencyKeyLockedError extends IdempotentFetchError {
  /** The locked key. */
  readonly idempotencyKey: string;
  /** The server's 409 response; its body is unread. */
  readonly response: Response;
  /** The parsed `application/problem+json` body, of type `PROBLEM_TYPES.keyLocked`. */
  readonly problem: ProblemDetails;
  /** How many attempts were sent, this one included. */
  readonly attempts: number;

  constructor(details: {
    idempotencyKey: string;
    response: Response;
    problem: ProblemDetails;
    attempts: number;
  }) {
    super(
      "ERR_IDEMPOTENCY_KEY_LOCKED",
      `The server refused the request (409 key-locked): the first request with the idempotency key ${JSON.stringify(
        details.idempotencyKey,
      )} stopped without a result, and the server never runs it twice, so the key stays locked until its ` +
        "record expires and retrying cannot help. Whether the operation took effect is unknown: check by hand " +
        "(read the resource it would have changed), and use a new key for a new attempt." +
        `${details.problem.detail ? ` Server: ${details.problem.detail}` : ""}`,
    );
    this.idempotencyKey = details.idempotencyKey;
    this.response = details.response;
    this.problem = details.problem;
    this.attempts = details.attempts;
  }
}

/**
 * Why a request failed in a way that may be retried: `"network"` (fetch rejected: connection refused, reset,
 * or closed before the response), `"timeout"` (the attempt ran out of `attemptTimeoutMs`, or of `deadlineMs`)
 * or `"status"` (the response status is in `retryOn`).
 *
 * @example
 * ```ts
 * const onRetry = ({ reason, status }: RetryEvent) => {
 *   const why: RetryReason = reason;
 *   console.warn(why === "status" ? `got ${status}` : why);
 * };
 * ```
 */
export type RetryReason = "network" | "timeout" | "status";

/**
 * The option whose limit ended the retries: `"maxAttempts"` (no attempts left), `"deadlineMs"` (the deadline
 * passed during an attempt, or the next wait would end after it) or `"maxDelayMs"` (the server's
 * `Retry-After` asks for a longer wait than `maxDelayMs`).
 *
 * @example
 * ```ts
 * const limit: GiveUpLimit = error.limit;
 * if (limit === "maxDelayMs") schedule(error.retryAfterMs);
 * ```
 */
export type GiveUpLimit = "maxAttempts" | "deadlineMs" | "maxDelayMs";

/**
 * What an {@link IdempotentFetchGaveUpError} carries.
 *
 * @example
 * ```ts
 * const details: GaveUpDetails = {
 *   limit: "maxAttempts",
 *   reason: "network",
 *   attempts: 5,
 *   idempotencyKey: "5f0c…",
 *   response: undefined,
 *   problem: undefined,
 *   retryAfterMs: undefined,
 *   cause: new TypeError("fetch failed"),
 * };
 * ```
 */
export interface GaveUpDetails {
  limit: GiveUpLimit;
  reason: RetryReason;
  attempts: number;
  idempotencyKey: string | null;
  response: Response | undefined;
  problem: ProblemDetails | undefined;
  retryAfterMs: number | undefined;
  cause: unknown;
}

/**
 * The client stopped retrying without a definitive answer: the last attempt failed (network, timeout, or a
 * status in `retryOn`) and `limit` names the option that forbade another. The operation may or may not have
 * run on the server: retry it later with the same `idempotencyKey` (`{ key: error.idempotencyKey }`) to get
 * its result without running it twice. `response` is the last response, body unread, when there was one;
 * `cause` the last network error.
 *
 * @example
 * ```ts
 * import { IdempotentFetchGaveUpError, idempotentFetch } from "@idempotency/client";
 *
 * try {
 *   await idempotentFetch(url, { method: "POST", body });
 * } catch (error) {
 *   if (error instanceof IdempotentFetchGaveUpError) await outbox.later({ key: error.idempotencyKey, body });
 *   else throw error;
 * }
 * ```
 */
export class IdempotentFetchGaveUpError extends IdempotentFetchError {
  /** The option whose limit ended the retries. */
  readonly limit: GiveUpLimit;
  /** How the last attempt failed. */
  readonly reason: RetryReason;
  /** How many attempts were sent. */
  readonly attempts: number;
  /** The key every attempt carried; `null` for a request sent without one (e.g. a `GET`). */
  readonly idempotencyKey: string | null;
  /** The last response (its status is in `retryOn`), body unread; `undefined` after a network error or timeout. */
  readonly response: Response | undefined;
  /** The last response's status, when there was one. */
  readonly status: number | undefined;
  /** The last response's `application/problem+json` body, parsed. */
  readonly problem: ProblemDetails | undefined;
  /** The last response's `Retry-After`, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, details: GaveUpDetails, code = "ERR_IDEMPOTENT_FETCH_GAVE_UP") {
    super(code, message, details.cause === undefined ? undefined : { cause: details.cause });
    this.limit = details.limit;
    this.reason = details.reason;
    this.attempts = details.attempts;
    this.idempotencyKey = details.idempotencyKey;
    this.response = details.response;
    this.status = details.response?.status;
    this.problem = details.problem;
    this.retryAfterMs = details.retryAfterMs;
  }
}

/**
 * The client gave up while the server still answered 409: a request with this key is still being
 * processed (typically the first attempt, whose response was lost). It will finish on its own: retry later
 * with the same key, after `retryAfterMs` when the server sent `Retry-After`, to get its result. A subclass
 * of {@link IdempotentFetchGaveUpError}, so one `catch` handles every "no answer yet".
 *
 * @example
 * ```ts
 * import { IdempotencyInProgressError, idempotentFetch } from "@idempotency/client";
 *
 * try {
 *   return await idempotentFetch(url, { method: "POST", body }, { key });
 * } catch (error) {
 *   if (error instanceof IdempotencyInProgressError) return retryIn(error.retryAfterMs ?? 1_000, key);
 *   throw error;
 * }
 * ```
 */
export class IdempotencyInProgressError extends IdempotentFetchGaveUpError {
  constructor(message: string, details: GaveUpDetails) {
    super(message, details, "ERR_IDEMPOTENCY_IN_PROGRESS");
  }
}
