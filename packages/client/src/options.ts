import { IdempotentFetchOptionsError, type RetryReason } from "./errors.js";
import { isValidKey } from "./key.js";
import type { ProblemDetails } from "./problem.js";

/**
 * The statuses retried by default: 408 (the server timed out reading the request; nothing ran), 409 (a
 * request with this key is still running; only for requests that carry a key, and never a 409 `key-locked`,
 * which is final), 425 (too early), 429 (rate limited), 502, 503 and 504 (a gateway or the service is briefly
 * unavailable). 500 is not among them: add it to `retryOn` when your server releases the key on a 500, as the
 * `@idempotency` servers do.
 *
 * @example
 * ```ts
 * import { createIdempotentFetch, DEFAULT_RETRY_ON } from "@idempotency/client";
 *
 * const fetchWithRetries = createIdempotentFetch({ retryOn: [...DEFAULT_RETRY_ON, 500] });
 * ```
 */
export const DEFAULT_RETRY_ON: readonly number[] = Object.freeze([408, 409, 425, 429, 502, 503, 504]);

/**
 * What `onRetry` receives before each wait: the attempt that just failed, how, and how long the client waits
 * before the next one.
 *
 * @example
 * ```ts
 * const onRetry = (event: RetryEvent) =>
 *   console.warn(`${event.method} ${event.url}: attempt ${event.attempt} failed (${event.reason}${
 *     event.status ? ` ${event.status}` : ""}), retrying in ${event.delayMs} ms`);
 * ```
 */
export interface RetryEvent {
  /** The attempt that failed, from 1 (the first request); the next one is `attempt + 1`. */
  attempt: number;
  /** How long the client waits before the next attempt: `Retry-After` when the server sent one, else the backoff. */
  delayMs: number;
  /** How the attempt failed. */
  reason: RetryReason;
  /** The response status, when `reason` is `"status"`. */
  status: number | undefined;
  /** The response's parsed `application/problem+json` body, when it had one. */
  problem: ProblemDetails | undefined;
  /** The response's `Retry-After` in milliseconds, when it sent one (then `delayMs` equals it). */
  retryAfterMs: number | undefined;
  /** What the attempt failed with: fetch's rejection (`"network"`) or a `TimeoutError` `DOMException` (`"timeout"`). */
  error: unknown;
  /** The key every attempt carries; `null` for a request without one (e.g. a `GET`). */
  idempotencyKey: string | null;
  /** The request method, upper case. */
  method: string;
  /** The request URL. */
  url: string;
}

/**
 * The fetch function the client calls for each attempt: the global `fetch`, or any function with its shape
 * (a framework's `app.request`, a fetch with a custom dispatcher). It receives a complete `Request`; the
 * second argument carries the caller's non-standard `init` members (such as Node's `dispatcher`), if any.
 *
 * @example
 * ```ts
 * const viaHono: FetchFunction = (request) => app.fetch(request);
 * const fetchWithRetries = createIdempotentFetch({ fetch: viaHono });
 * ```
 */
export type FetchFunction = (input: Request, init?: RequestInit) => Promise<Response>;

/**
 * The options of `createIdempotentFetch` and `idempotentFetch`. Every option is optional; invalid ones throw
 * `IdempotentFetchOptionsError` naming the option.
 *
 * @example
 * ```ts
 * const options: IdempotentFetchOptions = {
 *   maxAttempts: 6,
 *   deadlineMs: 30_000,
 *   attemptTimeoutMs: 5_000,
 *   onRetry: ({ attempt, delayMs, reason }) => console.warn({ attempt, delayMs, reason }),
 * };
 * ```
 */
export interface IdempotentFetchOptions {
  /** Attempts in total, the first one included. Default `5`. `1` disables retries. */
  maxAttempts?: number;
  /** The backoff's base: the n-th retry waits `random(0, min(maxDelayMs, baseDelayMs · 2^n))`. Default `100`. */
  baseDelayMs?: number;
  /**
   * The longest single wait. The backoff never exceeds it; a `Retry-After` above it ends the retries with
   * `IdempotentFetchGaveUpError` (`limit: "maxDelayMs"`) instead of waiting less than the server asked.
   * Default `10_000`.
   */
  maxDelayMs?: number;
  /**
   * The whole operation's budget, from the call to the final answer: an attempt still running when it passes
   * is aborted, and a wait that would end after it is not started. Either way the call rejects with
   * `IdempotentFetchGaveUpError` (`limit: "deadlineMs"`). Default: none.
   */
  deadlineMs?: number;
  /** One attempt's budget: an attempt that has no response after this long is aborted and retried (`"timeout"`). Default: none. */
  attemptTimeoutMs?: number;
  /**
   * The response statuses that are retried. Default {@link DEFAULT_RETRY_ON}; 422 cannot be listed. A 409
   * `key-locked` is never retried, even with 409 listed: it rejects with `IdempotencyKeyLockedError`.
   */
  retryOn?: readonly number[];
  /** The methods that get an idempotency key when the caller sent none. Default `["POST", "PATCH"]`. */
  methods?: readonly string[];
  /** The request header carrying the key. Default `"Idempotency-Key"`. */
  header?: string;
  /**
   * This operation's key (per call only): sent as an sf-string (`"…"`), and the same on every retry. Printable
   * ASCII. Default: a new `crypto.randomUUID()` per call, for the methods in `methods`.
   */
  key?: string;
  /** Called before each wait, with the failed attempt and the delay. Errors it throws are ignored. */
  onRetry?: (event: RetryEvent) => void;
  /** The fetch each attempt calls. Default: the global `fetch`, looked up at each call. */
  fetch?: FetchFunction;
  /** Random numbers in `[0, 1)` for the jitter. Default `Math.random`; inject one in tests. */
  random?: () => number;
  /**
   * Waits between attempts: resolves after `ms` milliseconds. Default `setTimeout`; inject a fake clock in
   * tests. The client stops waiting by itself when the request's signal aborts; `signal` is passed so the
   * sleep can release its timer early.
   */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** The clock for `deadlineMs` and HTTP-date `Retry-After`, in epoch milliseconds. Default `Date.now`. */
  now?: () => number;
}

/** The options after validation, with every default applied: decided once, when a fetch is created. */
export interface ResolvedOptions {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  deadlineMs: number | undefined;
  attemptTimeoutMs: number | undefined;
  retryOn: ReadonlySet<number>;
  methods: ReadonlySet<string>;
  header: string;
  key: string | undefined;
  onRetry: ((event: RetryEvent) => void) | undefined;
  fetch: FetchFunction | undefined;
  random: () => number;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  now: () => number;
}

const KNOWN_OPTIONS = [
  "maxAttempts",
  "baseDelayMs",
  "maxDelayMs",
  "deadlineMs",
  "attemptTimeoutMs",
  "retryOn",
  "methods",
  "header",
  "key",
  "onRetry",
  "fetch",
  "random",
  "sleep",
  "now",
] as const satisfies readonly (keyof IdempotentFetchOptions)[];

/** The longest delay `setTimeout` honours (2^31 - 1 ms, about 24.8 days); longer ones would fire at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/** RFC 9110 token characters: header names and methods. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Waits with `setTimeout`, and lets the timer go when `signal` aborts. */
export function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Validates every option and applies the defaults; throws `IdempotentFetchOptionsError` naming the option.
 * `perCall` is false for `createIdempotentFetch`'s options, which must not fix one `key` for every call.
 */
export function resolveOptions(
  options: IdempotentFetchOptions | undefined,
  perCall: boolean,
): ResolvedOptions {
  if (options === undefined) options = {};
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    fail("options", `expected an object of options, got ${describe(options)}.`);
  }
  const known: ReadonlySet<string> = new Set(KNOWN_OPTIONS);
  for (const name of Object.keys(options)) {
    if (!known.has(name)) fail(name, `unknown option. Known options: ${KNOWN_OPTIONS.join(", ")}.`);
  }

  const maxAttempts = options.maxAttempts ?? 5;
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts < 1) {
    fail(
      "maxAttempts",
      `expected a whole number of attempts, 1 or more (1: no retries), got ${describe(maxAttempts)}.`,
    );
  }
  const baseDelayMs = checkDelay("baseDelayMs", options.baseDelayMs ?? 100);
  const maxDelayMs = checkDelay("maxDelayMs", options.maxDelayMs ?? 10_000);
  const deadlineMs = checkBudget("deadlineMs", options.deadlineMs);
  const attemptTimeoutMs = checkBudget("attemptTimeoutMs", options.attemptTimeoutMs);

  const retryOn = options.retryOn ?? DEFAULT_RETRY_ON;
  if (!Array.isArray(retryOn))
    fail("retryOn", `expected an array of HTTP statuses, got ${describe(retryOn)}.`);
  for (const status of retryOn as unknown[]) {
    if (status === 422) {
      fail(
        "retryOn",
        "422 cannot be retried: it means the idempotency key was already used for a different request, and " +
          "resending cannot change that (the client throws IdempotencyKeyReusedError instead).",
      );
    }
    if (typeof status !== "number" || !Number.isInteger(status) || status < 400 || status > 599) {
      fail("retryOn", `expected HTTP error statuses from 400 to 599, got ${describe(status)}.`);
    }
  }

  const methods = options.methods ?? ["POST", "PATCH"];
  if (!Array.isArray(methods))
    fail("methods", `expected an array of HTTP methods, got ${describe(methods)}.`);
  for (const method of methods as unknown[]) {
    if (typeof method !== "string" || !TOKEN.test(method)) {
      fail("methods", `expected HTTP method names such as "POST", got ${describe(method)}.`);
    }
  }

  const header = options.header ?? "Idempotency-Key";
  if (typeof header !== "string" || !TOKEN.test(header)) {
    fail("header", `expected a valid HTTP header name such as "Idempotency-Key", got ${describe(header)}.`);
  }

  const key = options.key;
  if (key !== undefined) {
    if (!perCall) {
      fail(
        "key",
        "a key names one operation, so it cannot be fixed for every call of a created fetch: pass it per call, " +
          "as the third argument (`fetchWithRetries(url, init, { key })`).",
      );
    }
    if (typeof key !== "string" || !isValidKey(key)) {
      fail("key", `expected a non-empty string of printable ASCII (0x20-0x7E), got ${describe(key)}.`);
    }
  }

  for (const name of ["onRetry", "fetch", "random", "sleep", "now"] as const) {
    const value = options[name];
    if (value !== undefined && typeof value !== "function") {
      fail(name, `expected a function, got ${describe(value)}.`);
    }
  }

  return {
    maxAttempts,
    baseDelayMs,
    maxDelayMs,
    deadlineMs,
    attemptTimeoutMs,
    retryOn: new Set(retryOn),
    methods: new Set(methods.map((method) => method.toUpperCase())),
    header,
    key,
    onRetry: options.onRetry,
    fetch: options.fetch,
    random: options.random ?? Math.random,
    sleep: options.sleep ?? defaultSleep,
    now: options.now ?? Date.now,
  };
}

function checkDelay(option: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
    fail(option, `expected milliseconds from 0 to ${MAX_TIMER_MS}, got ${describe(value)}.`);
  }
  return value;
}

function checkBudget(option: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || Number.isNaN(value) || value <= 0) {
    fail(
      option,
      `expected a number of milliseconds above 0 (leave it out for no limit), got ${describe(value)}.`,
    );
  }
  return value === Number.POSITIVE_INFINITY ? undefined : value;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}

function fail(option: string, message: string): never {
  throw new IdempotentFetchOptionsError(option, message);
}
