import { backoffDelay } from "./backoff.js";
import {
  type GaveUpDetails,
  type GiveUpLimit,
  IdempotencyInProgressError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  IdempotentFetchBodyError,
  IdempotentFetchGaveUpError,
  IdempotentFetchOptionsError,
  type RetryReason,
} from "./errors.js";
import { formatKey, keyOfHeader, randomKey } from "./key.js";
import {
  type FetchFunction,
  type IdempotentFetchOptions,
  MAX_TIMER_MS,
  type ResolvedOptions,
  type RetryEvent,
  resolveOptions,
} from "./options.js";
import {
  isOurProblemType,
  isProblemResponse,
  PROBLEM_TYPES,
  type ProblemDetails,
  readProblem,
} from "./problem.js";
import { parseRetryAfter } from "./retry-after.js";

/**
 * The `Response` an idempotent fetch resolves with: the server's final response, unchanged, plus what the
 * client knows about how it got there.
 *
 * @example
 * ```ts
 * const response: IdempotentResponse = await idempotentFetch(url, { method: "POST", body });
 * if (response.replayed) console.log(`the first attempt ran; this is its stored result (${response.attempts} attempts)`);
 * ```
 */
export interface IdempotentResponse extends Response {
  /** The key every attempt carried; `null` for a request sent without one (e.g. a `GET`). */
  readonly idempotencyKey: string | null;
  /**
   * `true` when the server says this is a stored response replayed for a retry (`Idempotent-Replayed: true`):
   * the operation ran once, on an earlier attempt or an earlier call with the same key.
   */
  readonly replayed: boolean;
  /** How many attempts were sent, the last one included. */
  readonly attempts: number;
}

/**
 * A fetch that makes its requests safe to retry; made by {@link createIdempotentFetch}. Takes `fetch`'s
 * arguments, plus options for this call (merged over the factory's; `key` goes here).
 *
 * @example
 * ```ts
 * const fetchWithRetries: IdempotentFetch = createIdempotentFetch({ maxAttempts: 4 });
 * await fetchWithRetries(url, { method: "POST", body }, { key: `order-${order.id}` });
 * ```
 */
export type IdempotentFetch = (
  input: string | URL | Request,
  init?: RequestInit,
  options?: IdempotentFetchOptions,
) => Promise<IdempotentResponse>;

/**
 * Creates a fetch that sends each logical operation with one `Idempotency-Key` and retries it, with the same
 * key, on network errors, timeouts and the statuses in `retryOn`, with exponential backoff and full jitter,
 * honouring `Retry-After`. Options are validated here: an invalid one throws `IdempotentFetchOptionsError`.
 * Per-call options (the third argument) are merged over these; `key` is per call only.
 *
 * @example
 * ```ts
 * import { createIdempotentFetch } from "@idempotency/client";
 *
 * const fetchWithRetries = createIdempotentFetch({
 *   maxAttempts: 5,
 *   deadlineMs: 20_000,
 *   onRetry: ({ attempt, delayMs, reason }) => console.warn(`attempt ${attempt} failed (${reason}), retry in ${delayMs} ms`),
 * });
 *
 * const response = await fetchWithRetries("https://api.example.com/orders", {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ item: "book" }),
 * });
 * console.log(response.status, response.replayed, response.idempotencyKey);
 * ```
 */
export function createIdempotentFetch(options: IdempotentFetchOptions = {}): IdempotentFetch {
  const resolved = resolveOptions(options, false);
  return async (input, init, callOptions) =>
    send(
      input,
      init,
      callOptions === undefined ? resolved : resolveOptions({ ...options, ...callOptions }, true),
    );
}

/**
 * `fetch`, made safe to retry: a `POST` or `PATCH` gets one new `Idempotency-Key` (a `crypto.randomUUID()`
 * sent as an sf-string, `"…"`) unless it carries one, and every retry of this call resends the same key and
 * the same body bytes, so the server runs the operation once. Resolves with the final response (any status,
 * as fetch does); rejects with `IdempotencyKeyReusedError` on a 422 key reuse, with
 * `IdempotencyKeyLockedError` on a 409 `key-locked` (never retried), with `IdempotentFetchGaveUpError` when
 * retries run out without a definitive answer, and with the signal's reason when `init.signal` aborts.
 *
 * @example
 * ```ts
 * import { idempotentFetch } from "@idempotency/client";
 *
 * const response = await idempotentFetch(
 *   "https://api.example.com/payments",
 *   { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ amount: 1000 }) },
 *   { key: `payment-${invoice.id}`, deadlineMs: 15_000 },
 * );
 * if (response.replayed) console.log("already paid: this is the original response");
 * ```
 */
export async function idempotentFetch(
  input: string | URL | Request,
  init?: RequestInit,
  options?: IdempotentFetchOptions,
): Promise<IdempotentResponse> {
  return send(input, init, resolveOptions(options, true));
}

/** HTTP methods that are idempotent by definition (RFC 9110 §9.2.2): retried without a key. */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** The `init` members the client sets itself on each attempt; the rest are passed on to `fetch`. */
const OWN_INIT_MEMBERS: ReadonlySet<string> = new Set(["body", "headers", "method", "signal", "duplex"]);

/** The abort reason of an attempt that ran out of time (never shown: it becomes a retry or a give-up). */
const TIMED_OUT = Symbol("timed out");

/** One logical operation: the request as it is resent on every attempt. */
interface Operation {
  base: Request;
  headers: Headers;
  body: Uint8Array<ArrayBuffer> | null;
  extraInit: RequestInit | undefined;
  key: string | null;
  /** The caller chose the key (it may have been used before), rather than this call generating it. */
  callerKey: boolean;
  retrySafe: boolean;
  method: string;
  signal: AbortSignal;
}

type AttemptResult =
  | { kind: "response"; response: Response; detach(): void }
  | { kind: "failed"; reason: "network" | "timeout"; error: unknown; deadline: boolean };

async function send(
  input: string | URL | Request,
  init: RequestInit | undefined,
  options: ResolvedOptions,
): Promise<IdempotentResponse> {
  const fetchImpl = options.fetch ?? globalFetch();
  const deadlineAt =
    options.deadlineMs === undefined ? Number.POSITIVE_INFINITY : options.now() + options.deadlineMs;
  const operation = await prepare(input, init, options);

  for (let attempt = 1; ; attempt++) {
    operation.signal.throwIfAborted();
    const result = await sendAttempt(operation, fetchImpl, options, deadlineAt);
    const lastAttempt = !operation.retrySafe;

    let response: Response | undefined;
    let detach: (() => void) | undefined;
    let problem: ProblemDetails | undefined;
    let reason: RetryReason;
    let cause: unknown;
    if (result.kind === "failed") {
      if (lastAttempt) throw result.error;
      reason = result.reason;
      cause = result.error;
      if (result.deadline) {
        throw giveUp("deadlineMs", { reason, attempts: attempt, operation, cause, options });
      }
    } else {
      response = result.response;
      detach = result.detach;
      const status = response.status;
      // A 422 or 409 may refuse this key for good, whatever retryOn says: its problem type tells.
      const key = operation.key;
      const mayRefuseKey = key !== null && (status === 422 || status === 409);
      if (mayRefuseKey && isProblemResponse(response)) {
        problem = await readProblem(response.clone(), options.now);
        if (problem !== undefined) {
          const refusal = { idempotencyKey: key, response, problem, attempts: attempt };
          if (status === 422 && isKeyReuse(response, problem, operation)) {
            throw new IdempotencyKeyReusedError(refusal);
          }
          // The first request stopped without a result and the server never runs it twice.
          if (status === 409 && problem.type === PROBLEM_TYPES.keyLocked) {
            throw new IdempotencyKeyLockedError(refusal);
          }
        }
      }
      if (lastAttempt || !isRetryableStatus(status, operation, options)) {
        return decorate(response, operation.key, attempt);
      }
      reason = "status";
      if (!mayRefuseKey && isProblemResponse(response)) {
        problem = await readProblem(response.clone(), options.now);
      }
    }

    const retryAfterMs =
      response === undefined
        ? undefined
        : parseRetryAfter(response.headers.get("retry-after"), response.headers.get("date"), options.now());
    const details = { reason, attempts: attempt, operation, response, problem, retryAfterMs, cause, options };
    if (attempt >= options.maxAttempts) throw giveUp("maxAttempts", details);
    if (retryAfterMs !== undefined && retryAfterMs > options.maxDelayMs) throw giveUp("maxDelayMs", details);
    const delayMs =
      retryAfterMs ?? backoffDelay(attempt - 1, options.baseDelayMs, options.maxDelayMs, options.random);
    if (options.now() + delayMs >= deadlineAt) throw giveUp("deadlineMs", { ...details, delayMs });

    report(options, {
      attempt,
      delayMs,
      reason,
      status: response?.status,
      problem,
      retryAfterMs,
      error: cause,
      idempotencyKey: operation.key,
      method: operation.method,
      url: operation.base.url,
    });
    try {
      await wait(delayMs, options, operation.signal);
    } finally {
      // Kept until now: a wait that overshoots the deadline gives up with this response, body unread.
      if (options.now() < deadlineAt || operation.signal.aborted) {
        discard(response);
        detach?.();
      }
    }
    // A timer may fire late; the deadline still holds.
    if (options.now() >= deadlineAt) throw giveUp("deadlineMs", details);
  }
}

/** Builds the request once: its body buffered so every attempt resends the same bytes, its key decided. */
async function prepare(
  input: string | URL | Request,
  init: RequestInit | undefined,
  options: ResolvedOptions,
): Promise<Operation> {
  const streamed = init?.body != null && isStream(init.body);
  let base: Request;
  try {
    // Fetch needs `duplex: "half"` for a stream body; it is buffered here anyway, so the client adds it.
    base = new Request(input, streamed ? ({ ...init, duplex: "half" } as RequestInit) : init);
  } catch (error) {
    const usedRequest = isRequest(input) && input.bodyUsed && init?.body == null;
    if (usedRequest) {
      throw new IdempotentFetchBodyError(
        "The Request's body was already read, so it cannot be sent: pass a Request whose body is unread, or a " +
          "body that can be read (a string, bytes, Blob, FormData or an unread stream).",
        { cause: error },
      );
    }
    if (streamed) {
      throw new IdempotentFetchBodyError(
        "The request body stream is locked or was already read, so it cannot be sent: pass a fresh stream, or " +
          "the body itself (a string, bytes, Blob or FormData).",
        { cause: error },
      );
    }
    throw error;
  }

  let body: Uint8Array<ArrayBuffer> | null = null;
  if (base.body !== null) {
    try {
      // Read once: every attempt resends these bytes. FormData is serialised once too, so its multipart
      // boundary (and with it the server's fingerprint of the body) stays the same on every retry.
      body = new Uint8Array(await base.arrayBuffer());
    } catch (error) {
      throw new IdempotentFetchBodyError(
        `Reading the request body failed, so nothing was sent: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
    }
  }

  const method = base.method.toUpperCase();
  const headers = new Headers(base.headers);
  const sent = headers.get(options.header);
  let key: string | null = null;
  let callerKey = false;
  if (sent !== null) {
    key = keyOfHeader(sent);
    callerKey = true;
    if (options.key !== undefined && options.key !== key) {
      throw new IdempotentFetchOptionsError(
        "key",
        `the request already carries the ${options.header} header ${JSON.stringify(sent)}, which names another ` +
          "key: pass the key once, as the header or as this option.",
      );
    }
  } else if (options.key !== undefined || options.methods.has(method)) {
    key = options.key ?? randomKey();
    callerKey = options.key !== undefined;
    headers.set(options.header, formatKey(key));
  }

  let extraInit: RequestInit | undefined;
  if (init !== undefined) {
    const extra = Object.fromEntries(Object.entries(init).filter(([name]) => !OWN_INIT_MEMBERS.has(name)));
    if (Object.keys(extra).length > 0) extraInit = extra as RequestInit;
  }

  return {
    base,
    headers,
    body,
    extraInit,
    key,
    callerKey,
    retrySafe: key !== null || IDEMPOTENT_METHODS.has(method),
    method,
    signal: base.signal,
  };
}

/** Sends one attempt, bounded by `attemptTimeoutMs`, the deadline and the caller's signal. */
async function sendAttempt(
  operation: Operation,
  fetchImpl: FetchFunction,
  options: ResolvedOptions,
  deadlineAt: number,
): Promise<AttemptResult> {
  const controller = new AbortController();
  const caller = operation.signal;
  const onCallerAbort = () => controller.abort(caller.reason);
  caller.addEventListener("abort", onCallerAbort, { once: true });

  const deadlineLeftMs = deadlineAt - options.now();
  const timeoutMs = options.attemptTimeoutMs ?? Number.POSITIVE_INFINITY;
  const byDeadline = deadlineLeftMs <= timeoutMs;
  const budgetMs = Math.min(timeoutMs, deadlineLeftMs);
  if (budgetMs <= 0) {
    caller.removeEventListener("abort", onCallerAbort);
    const error = new DOMException("The deadline passed before the attempt could start.", "TimeoutError");
    return { kind: "failed", reason: "timeout", error, deadline: true };
  }
  const timer =
    budgetMs <= MAX_TIMER_MS ? setTimeout(() => controller.abort(TIMED_OUT), budgetMs) : undefined;

  // A fetch that ignores its signal must not hold the client: the attempt ends when the signal aborts.
  const aborted = new Promise<never>((_, reject) => {
    controller.signal.addEventListener("abort", () => reject(controller.signal.reason), { once: true });
  });
  aborted.catch(() => {});

  let pending: Promise<Response> | undefined;
  try {
    const request = new Request(operation.base, {
      headers: operation.headers,
      body: operation.body,
      signal: controller.signal,
    });
    pending = fetchImpl(request, operation.extraInit);
    const response = await Promise.race([pending, aborted]);
    // The caller's signal keeps governing the returned response's body, as with fetch; a response the client
    // discards lets go of it.
    return { kind: "response", response, detach: () => caller.removeEventListener("abort", onCallerAbort) };
  } catch (error) {
    caller.removeEventListener("abort", onCallerAbort);
    // A late response to an abandoned attempt (a fetch that ignored its signal) is drained, freeing its connection.
    if (controller.signal.aborted && pending !== undefined) pending.then(discard, () => {});
    if (caller.aborted) throw caller.reason;
    if (controller.signal.reason === TIMED_OUT) {
      const error = new DOMException(`The attempt had no response after ${budgetMs} ms.`, "TimeoutError");
      return { kind: "failed", reason: "timeout", error, deadline: byDeadline };
    }
    return { kind: "failed", reason: "network", error, deadline: false };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/** Waits `ms` before the next attempt; stops (rejecting with the reason) when the caller's signal aborts. */
async function wait(ms: number, options: ResolvedOptions, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => {});
  try {
    await Promise.race([options.sleep(ms, signal), aborted]);
  } finally {
    if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Whether a 422 problem says this key was used for another request. Our servers' problem type says so
 * exactly; another server's 422 problem counts only when the key may have been used before (the caller chose
 * it): a key this call generated reached the server only with this very request, so a 422 then is the
 * application's own answer. A replayed 422 is a stored response, never a key reuse.
 */
function isKeyReuse(response: Response, problem: ProblemDetails, operation: Operation): boolean {
  if (response.headers.get("idempotent-replayed") === "true") return false;
  if (problem.type === PROBLEM_TYPES.keyReused) return true;
  if (isOurProblemType(problem.type)) return false;
  return operation.callerKey;
}

/** 409 means "still in progress" only for a request with a key; without one it is a final conflict. */
function isRetryableStatus(status: number, operation: Operation, options: ResolvedOptions): boolean {
  if (!options.retryOn.has(status)) return false;
  return status !== 409 || operation.key !== null;
}

function giveUp(
  limit: GiveUpLimit,
  details: {
    reason: RetryReason;
    attempts: number;
    operation: Operation;
    options: ResolvedOptions;
    response?: Response | undefined;
    problem?: ProblemDetails | undefined;
    retryAfterMs?: number | undefined;
    cause?: unknown;
    delayMs?: number;
  },
): IdempotentFetchGaveUpError {
  const { reason, attempts, operation, options, response, problem, retryAfterMs, cause, delayMs } = details;
  const payload: GaveUpDetails = {
    limit,
    reason,
    attempts,
    idempotencyKey: operation.key,
    response,
    problem,
    retryAfterMs,
    cause,
  };
  const inProgress = response?.status === 409;
  const what =
    reason === "network"
      ? `failed before a response arrived (${cause instanceof Error ? describeNetworkError(cause) : String(cause)})`
      : reason === "timeout"
        ? limit === "deadlineMs"
          ? "had no response yet"
          : `had no response after ${options.attemptTimeoutMs} ms (attemptTimeoutMs)`
        : `got ${response!.status}${problem?.title ? ` ${problem.title}` : response!.statusText ? ` ${response!.statusText}` : ""}`;
  const why =
    limit === "maxAttempts"
      ? `after ${attempts} attempt${attempts === 1 ? "" : "s"} (maxAttempts: ${options.maxAttempts})`
      : limit === "maxDelayMs"
        ? `after ${attempts} attempt${attempts === 1 ? "" : "s"}: the server asked to wait ${retryAfterMs} ms (Retry-After), longer than maxDelayMs (${options.maxDelayMs})`
        : delayMs !== undefined
          ? `after ${attempts} attempt${attempts === 1 ? "" : "s"}: waiting ${delayMs} ms more would pass the deadline (deadlineMs: ${options.deadlineMs})`
          : `after ${attempts} attempt${attempts === 1 ? "" : "s"}: the deadline passed (deadlineMs: ${options.deadlineMs})`;
  const next =
    operation.key === null
      ? ""
      : inProgress
        ? ` The server is still processing the request with this key: retry later with the same key${
            retryAfterMs === undefined ? "" : ` (after ${retryAfterMs} ms)`
          } to get its result.`
        : " The operation may or may not have run: retry later with the same key (error.idempotencyKey) to get its " +
          "result without running it twice.";
  const message = `${operation.method} ${operation.base.url}: gave up ${why}; the last attempt ${what}.${next}`;
  return inProgress
    ? new IdempotencyInProgressError(message, payload)
    : new IdempotentFetchGaveUpError(message, payload);
}

function describeNetworkError(error: Error): string {
  const cause = error.cause;
  if (cause instanceof Error && cause.message && cause.message !== error.message) {
    return `${error.message}: ${cause.message}`;
  }
  return error.message;
}

function decorate(response: Response, key: string | null, attempts: number): IdempotentResponse {
  return Object.defineProperties(response, {
    idempotencyKey: { value: key, enumerable: true },
    replayed: { value: response.headers.get("idempotent-replayed") === "true", enumerable: true },
    attempts: { value: attempts, enumerable: true },
  }) as IdempotentResponse;
}

/** Frees a response the client will not return (its connection goes back to the pool). */
function discard(response: Response | undefined): void {
  if (response?.body && !response.bodyUsed) response.body.cancel().catch(() => {});
}

function report(options: ResolvedOptions, event: RetryEvent): void {
  if (options.onRetry === undefined) return;
  try {
    options.onRetry(event);
  } catch {
    // A logging hook must not change the outcome of the request.
  }
}

function globalFetch(): FetchFunction {
  const found = (globalThis as { fetch?: FetchFunction }).fetch;
  if (typeof found !== "function") {
    throw new IdempotentFetchOptionsError(
      "fetch",
      "this runtime has no global fetch: pass one, e.g. `{ fetch: myFetch }`.",
    );
  }
  return found;
}

function isStream(body: unknown): boolean {
  if (typeof body !== "object" || body === null) return false;
  return typeof ReadableStream !== "undefined" && body instanceof ReadableStream
    ? true
    : Symbol.asyncIterator in body;
}

function isRequest(input: unknown): input is Request {
  return typeof Request !== "undefined" && input instanceof Request;
}
