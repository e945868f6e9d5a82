import { parseRetryAfter } from "./retry-after.js";

/**
 * The `type` URIs of the RFC 9457 problems the `@idempotency` server packages send, one per case, so a client
 * can tell "send a key" from "wait and retry" from "you reused a key" without reading text. The same values as
 * `PROBLEM_TYPES` in `@idempotency/core` (a test keeps them equal), copied so that the client needs no server
 * code.
 *
 * @example
 * ```ts
 * import { PROBLEM_TYPES, parseProblem } from "@idempotency/client";
 *
 * const problem = await parseProblem(response);
 * if (problem?.type === PROBLEM_TYPES.responseNotStored) await fetch(response.headers.get("location")!);
 * ```
 */
export const PROBLEM_TYPES = {
  /** 400: the route requires an idempotency key and none was sent. */
  missingKey: "urn:idempotency:problem:missing-key",
  /** 400: the key is empty, too long, has characters outside visible ASCII, bad quoting, or several values. */
  invalidKey: "urn:idempotency:problem:invalid-key",
  /** 422: the key was already used with a request that has a different fingerprint. */
  keyReused: "urn:idempotency:problem:key-reused",
  /** 409: a request with this key is still being processed; retry after `Retry-After`. */
  inProgress: "urn:idempotency:problem:in-progress",
  /**
   * 409: the first request with this key stopped without a result, and the server never runs such a request
   * twice (`onLeaseExpired: "conflict"`): the key stays locked until its record expires. No `Retry-After`:
   * retrying it is pointless, so the client never does (it throws `IdempotencyKeyLockedError`).
   */
  keyLocked: "urn:idempotency:problem:key-locked",
  /** 410: the original request completed but its response was too large to store. */
  responseNotStored: "urn:idempotency:problem:response-not-stored",
  /** 413: the request body is larger than the server's `maxRequestBytes`. */
  requestTooLarge: "urn:idempotency:problem:request-too-large",
  /**
   * 400: the request ended before its body did (the connection closed mid-upload); nothing was run. A
   * client rarely sees it (it is usually the one that left); sending the whole request again is safe.
   */
  requestAborted: "urn:idempotency:problem:request-aborted",
  /** 503: the server's idempotency store could not be reached; nothing was run. */
  storeUnavailable: "urn:idempotency:problem:store-unavailable",
} as const;

const OUR_TYPES: ReadonlySet<string> = new Set(Object.values(PROBLEM_TYPES));

/**
 * An RFC 9457 problem details body, parsed from an `application/problem+json` response. Members of the wrong
 * JSON type are ignored, as the RFC says; `type` defaults to `"about:blank"`. `status` is the response's
 * status; `retryAfterMs` comes from its `Retry-After` header (seconds or an HTTP date).
 *
 * @example
 * ```ts
 * const problem: ProblemDetails | undefined = await parseProblem(response);
 * if (problem?.type === PROBLEM_TYPES.inProgress) console.log(`retry in ${problem.retryAfterMs} ms`);
 * ```
 */
export interface ProblemDetails {
  /** The problem type URI; `"about:blank"` when the body has none. */
  type: string;
  /** A short summary of the problem type. */
  title: string | undefined;
  /** The response's HTTP status. */
  status: number;
  /** An explanation of this occurrence, meant for a person. */
  detail: string | undefined;
  /** A URI identifying this occurrence. */
  instance: string | undefined;
  /** The response's `Retry-After` in milliseconds, when it sent a valid one. */
  retryAfterMs: number | undefined;
  /** Every other member of the body (extension members), as parsed. */
  extensions: Record<string, unknown>;
}

/** Problem bodies are small; a larger body is not read further (and is not taken for a problem). */
const MAX_PROBLEM_BYTES = 64 * 1024;

/** Whether a response declares an `application/problem+json` body (parameters such as charset allowed). */
export function isProblemResponse(response: Response): boolean {
  const contentType = response.headers.get("content-type");
  if (contentType === null) return false;
  return contentType.split(";", 1)[0]!.trim().toLowerCase() === "application/problem+json";
}

/**
 * Parses an `application/problem+json` response into {@link ProblemDetails}. Reads a clone, so `response`
 * itself stays readable. Resolves `undefined` when the response is not problem+json, its body is not a JSON
 * object, or it is larger than 64 KiB. Works on any server's problems, not only ours.
 *
 * @example
 * ```ts
 * import { PROBLEM_TYPES, parseProblem } from "@idempotency/client";
 *
 * const response = await idempotentFetch(url, { method: "POST", body });
 * const problem = await parseProblem(response);
 * if (problem?.type === PROBLEM_TYPES.invalidKey) console.error(problem.detail);
 * ```
 */
export async function parseProblem(response: Response): Promise<ProblemDetails | undefined> {
  if (!isProblemResponse(response) || response.body === null || response.bodyUsed) return undefined;
  return readProblem(response.clone(), Date.now);
}

/** Reads `response`'s body (the caller passes a clone when it needs the original) as a problem. */
export async function readProblem(
  response: Response,
  now: () => number,
): Promise<ProblemDetails | undefined> {
  const text = await readCapped(response, MAX_PROBLEM_BYTES);
  if (text === undefined) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return undefined;
  const { type, title, status: _status, detail, instance, ...extensions } = body as Record<string, unknown>;
  return {
    type: typeof type === "string" && type !== "" ? type : "about:blank",
    title: typeof title === "string" ? title : undefined,
    status: response.status,
    detail: typeof detail === "string" ? detail : undefined,
    instance: typeof instance === "string" ? instance : undefined,
    retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), response.headers.get("date"), now()),
    extensions,
  };
}

/** Whether `type` is one of {@link PROBLEM_TYPES}. */
export function isOurProblemType(type: string): boolean {
  return OUR_TYPES.has(type);
}

/** The body as UTF-8 text, or `undefined` (and the rest cancelled) when it is longer than `limit` bytes. */
async function readCapped(response: Response, limit: number): Promise<string | undefined> {
  const body = response.body;
  if (body === null) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      length += value.byteLength;
      if (length > limit) {
        // Not awaited: cancelling one branch of a clone settles only once the other branch is done too.
        reader.cancel().catch(() => {});
        return undefined;
      }
      chunks.push(value);
    }
  } catch {
    return undefined;
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
