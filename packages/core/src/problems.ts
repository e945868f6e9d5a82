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
  /** 409: a request with this key is still being processed. */
  inProgress: "urn:idempotency:problem:in-progress",
  /** 410: the original request completed but its response was too large to store. */
  responseNotStored: "urn:idempotency:problem:response-not-stored",
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
 * res.writeHead(status, headers.flat()).end(body);
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
