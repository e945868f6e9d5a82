import type { IdempotencyRequest } from "./request.js";

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
  /**
   * 400: the request ended before its body did (the client closed the connection mid-upload); nothing was
   * run. The client has usually left; a retry with the whole body runs normally.
   */
  requestAborted: "urn:idempotency:problem:request-aborted",
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

/**
 * One problem the engine answers with, before it is rendered: what `formatProblem` receives. `headers` are the
 * ones the contract requires (`Retry-After` on 409 in progress and 503, the original `Location` on 410); they
 * are sent whatever the rendering.
 *
 * @example
 * ```ts
 * const problem: IdempotencyProblem = {
 *   type: PROBLEM_TYPES.inProgress,
 *   status: 409,
 *   title: "Request in progress",
 *   detail: "A request with this Idempotency-Key is still being processed. Retry after 1 s to get its result.",
 *   headers: [["retry-after", "1"]],
 * };
 * ```
 */
export interface IdempotencyProblem {
  type: ProblemType;
  status: number;
  title: string;
  detail: string;
  headers: ReadonlyArray<[name: string, value: string]>;
}

/**
 * What a `formatProblem` hook returns to shape a problem answer: its own body (a string, bytes, or a value
 * sent as JSON), its content type, and extra headers. The status and the contract's headers stay.
 *
 * @example
 * ```ts
 * const shaped: ProblemRendering = {
 *   body: { error: { code: "IDEMPOTENCY_IN_PROGRESS", message: problem.detail } },
 *   headers: { "x-request-id": requestId },
 * };
 * ```
 */
export interface ProblemRendering {
  /** A string or bytes are sent as they are; anything else as JSON. */
  body: unknown;
  /** Default: `application/json` for a JSON value, `text/plain; charset=utf-8` for a string, else none. */
  contentType?: string;
  headers?: Readonly<Record<string, string>>;
}

const encoder = new TextEncoder();

/** Renders a problem as RFC 9457 `application/problem+json`, the default. */
export function renderProblem(problem: IdempotencyProblem): PreparedResponse {
  const { type, title, status, detail } = problem;
  return withBody(
    status,
    [["content-type", "application/problem+json"], ["cache-control", "no-store"], ...problem.headers],
    encoder.encode(JSON.stringify({ type, title, status, detail })),
  );
}

/**
 * Renders a problem through an application's `formatProblem` hook: its body, content type and headers, with
 * the contract's status and headers kept. A hook that throws, returns nothing or returns something unusable
 * gets the default rendering, so a bug in it never turns a 409 into a 500.
 */
export function renderWith(
  format: (problem: IdempotencyProblem, request: IdempotencyRequest) => ProblemRendering | undefined,
  problem: IdempotencyProblem,
  request: IdempotencyRequest,
): PreparedResponse {
  let rendering: ProblemRendering | undefined;
  try {
    rendering = format(problem, request);
  } catch {
    rendering = undefined;
  }
  if (rendering === undefined || rendering === null || typeof rendering !== "object")
    return renderProblem(problem);
  const { body, contentType, headers = {} } = rendering;
  let bytes: Uint8Array;
  let type = contentType;
  if (body instanceof Uint8Array) bytes = body;
  else if (typeof body === "string") {
    bytes = encoder.encode(body);
    type ??= "text/plain; charset=utf-8";
  } else {
    const json = JSON.stringify(body);
    if (json === undefined) return renderProblem(problem);
    bytes = encoder.encode(json);
    type ??= "application/json";
  }
  const fixed = new Set(problem.headers.map(([name]) => name));
  const out: Array<[string, string]> = [["cache-control", "no-store"]];
  if (type !== undefined) out.push(["content-type", type]);
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (
      !fixed.has(lower) &&
      lower !== "content-length" &&
      lower !== "content-type" &&
      typeof value === "string"
    ) {
      out.push([lower, value]);
    }
  }
  return withBody(problem.status, [...out, ...problem.headers], bytes);
}

function withBody(status: number, headers: Array<[string, string]>, body: Uint8Array): PreparedResponse {
  headers.push(["content-length", String(body.length)]);
  return { status, headers, body };
}

function problem(
  type: ProblemType,
  status: number,
  title: string,
  detail: string,
  headers: Array<[string, string]> = [],
): IdempotencyProblem {
  return { type, status, title, detail, headers };
}

/** The engine's problems, one builder per case; `header` is the configured key header name. */
export const problems = {
  missingKey: (header: string) =>
    problem(
      PROBLEM_TYPES.missingKey,
      400,
      "Idempotency key missing",
      `This request must carry an ${header} header: a unique value (for example a UUID) that you reuse when ` +
        "you retry the same request.",
    ),
  invalidKey: (header: string, reason: string) =>
    problem(PROBLEM_TYPES.invalidKey, 400, "Invalid idempotency key", `Invalid ${header} header: ${reason}.`),
  keyReused: (header: string) =>
    problem(
      PROBLEM_TYPES.keyReused,
      422,
      "Idempotency key reused",
      `This ${header} was already used for a different request to this endpoint (another body or query). Send a new key ` +
        "for a new request, or resend exactly the original request to get its result.",
    ),
  /** `retryAfterMs`: when the duplicate should try again (the hint, capped by the lease left). */
  inProgress: (header: string, retryAfterMs: number) => {
    const retryAfter = Math.max(1, Math.ceil(retryAfterMs / 1000));
    return problem(
      PROBLEM_TYPES.inProgress,
      409,
      "Request in progress",
      `A request with this ${header} is still being processed. Retry after ${retryAfter} s to get its result.`,
      [["retry-after", String(retryAfter)]],
    );
  },
  keyLocked: (header: string) =>
    problem(
      PROBLEM_TYPES.keyLocked,
      409,
      "Idempotency key locked",
      `A request with this ${header} stopped without a result, and this service never runs such a request ` +
        "twice; the key stays locked until its record expires. Do not retry it; use a new key for a new attempt.",
    ),
  responseNotStored: (location: Array<[string, string]>) =>
    problem(
      PROBLEM_TYPES.responseNotStored,
      410,
      "Response not stored",
      "The original request with this key completed, but its response was too large to store, so it cannot be " +
        "replayed. It will not run again; fetch the result from its resource instead.",
      location,
    ),
  requestTooLarge: (header: string, limit: number) =>
    problem(
      PROBLEM_TYPES.requestTooLarge,
      413,
      "Request too large",
      `Requests with an ${header} may carry at most ${limit} bytes of body here; this one carries more. ` +
        "Send a smaller body, or ask the service to raise its limit.",
    ),
  requestAborted: () =>
    problem(
      PROBLEM_TYPES.requestAborted,
      400,
      "Request aborted",
      "The request ended before its body was complete, so it was not processed. Send it again with the same " +
        "key and the whole body.",
    ),
  storeUnavailable: () =>
    problem(
      PROBLEM_TYPES.storeUnavailable,
      503,
      "Idempotency store unavailable",
      "The request was not processed because its idempotency record could not be checked. Retry it with the " +
        "same key later.",
      [["retry-after", "1"]],
    ),
};
