/**
 * The problem types of RFC 9457 responses the middleware sends. Each case has its own stable `type` URI,
 * so clients can tell "send a key" from "wait and retry" from "you reused a key" without parsing text.
 *
 * @example
 * ```ts
 * import { PROBLEM_TYPES } from "@idempotency/core";
 *
 * const problem = await response.json();
 * if (problem.type === PROBLEM_TYPES.inProgress) await retryLater(response.headers.get("retry-after"));
 * ```
 */
export const PROBLEM_TYPES = {
  /** 400: the route requires an idempotency key and none was sent. */
  missingKey: "urn:idempotency:problem:missing-key",
  /** 400: the key is empty, too long, has characters outside visible ASCII, bad quoting, or several values. */
  invalidKey: "urn:idempotency:problem:invalid-key",
  /** 422: the key was already used with a request that has a different fingerprint. */
  keyReused: "urn:idempotency:problem:key-reused",
  /** 409: a request with this key is still being processed; retry after `Retry-After` seconds. */
  inProgress: "urn:idempotency:problem:in-progress",
  /**
   * 409: a request with this key stopped without a result and the service never runs such a request twice
   * (`onLeaseExpired: "conflict"`): the key stays locked until its record expires. Do not retry it; there is
   * no `Retry-After`.
   */
  keyLocked: "urn:idempotency:problem:key-locked",
  /** 410: the original request completed but its response was too large to store. */
  responseNotStored: "urn:idempotency:problem:response-not-stored",
  /** 413: the request body is larger than `maxRequestBytes`, so it cannot be fingerprinted. */
  requestTooLarge: "urn:idempotency:problem:request-too-large",
  /** 503: the idempotency store could not be reached; nothing was run. */
  storeUnavailable: "urn:idempotency:problem:store-unavailable",
} as const;

/**
 * One of the {@link PROBLEM_TYPES} URIs.
 *
 * @example
 * ```ts
 * const type: ProblemType = PROBLEM_TYPES.keyReused;
 * ```
 */
export type ProblemType = (typeof PROBLEM_TYPES)[keyof typeof PROBLEM_TYPES];

/**
 * A response the engine asks a binding to send as it is: a replay or a problem.
 *
 * @example
 * ```ts
 * const { status, headers, body } = decision.response;
 * res.statusCode = status;
 * for (const [name, value] of headers) res.appendHeader(name, value); // a name may repeat
 * res.end(body);
 * ```
 */
export interface PreparedResponse {
  status: number;
  /** Lower-case name/value pairs; a name may repeat (e.g. `set-cookie` when re-admitted). */
  headers: Array<[name: string, value: string]>;
  body: Uint8Array;
}

const encoder = new TextEncoder();

/** An `application/problem+json` response; `extraHeaders` carry e.g. `retry-after`. */
export function problemResponse(
  type: ProblemType,
  status: number,
  title: string,
  detail: string,
  extraHeaders: Array<[string, string]> = [],
): PreparedResponse {
  const body = encoder.encode(JSON.stringify({ type, title, status, detail }));
  return {
    status,
    headers: [
      ["content-type", "application/problem+json"],
      ["cache-control", "no-store"],
      ...extraHeaders,
      ["content-length", String(body.length)],
    ],
    body,
  };
}

/** The engine's problem responses, one builder per case; `header` is the configured key header name. */
export const problems = {
  missingKey: (header: string) =>
    problemResponse(
      PROBLEM_TYPES.missingKey,
      400,
      "Idempotency key missing",
      `This request must carry an ${header} header: a unique value (for example a UUID) that you reuse when ` +
        "you retry the same request.",
    ),
  invalidKey: (header: string, reason: string) =>
    problemResponse(
      PROBLEM_TYPES.invalidKey,
      400,
      "Invalid idempotency key",
      `Invalid ${header} header: ${reason}.`,
    ),
  keyReused: (header: string) =>
    problemResponse(
      PROBLEM_TYPES.keyReused,
      422,
      "Idempotency key reused",
      `This ${header} was already used for a different request to this endpoint (another body or query). Send a new key ` +
        "for a new request, or resend exactly the original request to get its result.",
    ),
  /** `retryAfterMs`: when the duplicate should try again (the hint, capped by the lease left). */
  inProgress: (header: string, retryAfterMs: number) => {
    const retryAfter = Math.max(1, Math.ceil(retryAfterMs / 1000));
    return problemResponse(
      PROBLEM_TYPES.inProgress,
      409,
      "Request in progress",
      `A request with this ${header} is still being processed. Retry after ${retryAfter} s to get its result.`,
      [["retry-after", String(retryAfter)]],
    );
  },
  keyLocked: (header: string) =>
    problemResponse(
      PROBLEM_TYPES.keyLocked,
      409,
      "Idempotency key locked",
      `A request with this ${header} stopped without a result, and this service never runs such a request ` +
        "twice; the key stays locked until its record expires. Do not retry it; use a new key for a new attempt.",
    ),
  responseNotStored: (location: Array<[string, string]>) =>
    problemResponse(
      PROBLEM_TYPES.responseNotStored,
      410,
      "Response not stored",
      "The original request with this key completed, but its response was too large to store, so it cannot be " +
        "replayed. It will not run again; fetch the result from its resource instead.",
      location,
    ),
  requestTooLarge: (header: string, limit: number) =>
    problemResponse(
      PROBLEM_TYPES.requestTooLarge,
      413,
      "Request too large",
      `Requests with an ${header} may carry at most ${limit} bytes of body here; this one carries more. ` +
        "Send a smaller body, or ask the service to raise its limit.",
    ),
  storeUnavailable: () =>
    problemResponse(
      PROBLEM_TYPES.storeUnavailable,
      503,
      "Idempotency store unavailable",
      "The request was not processed because its idempotency record could not be checked. Retry it with the " +
        "same key later.",
      [["retry-after", "1"]],
    ),
};
