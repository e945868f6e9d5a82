import { IdempotencyOptionsError } from "./errors.js";
import type { IdempotencyEvent } from "./events.js";
import type { FingerprintOption } from "./fingerprint.js";
import { DEFAULT_UNREPLAYED_HEADERS, NEVER_STORED_HEADERS } from "./headers.js";
import type { IdempotencyProblem, ProblemRendering } from "./problems.js";
import type { IdempotencyRequest } from "./request.js";
import { type IdempotencyStore, isTransactionalStore } from "./store.js";

/**
 * The options of `createIdempotency`; every binding takes the same object.
 *
 * @example
 * ```ts
 * type AuthenticatedRequest = { user: { id: string; tenantId: string } }; // your framework's, after auth
 *
 * const options: IdempotencyOptions = {
 *   store: new MemoryStore(),
 *   scope: (request) => (request.native as AuthenticatedRequest).user.tenantId, // set by your auth
 *   required: true,
 * };
 * ```
 */
export interface IdempotencyOptions {
  /** Where records live. */
  store: IdempotencyStore;
  /**
   * The principal that owns a key (tenant, user, account): records are keyed by (scope, method, path, key),
   * so two principals using the same key never see each other's records. Read it from what your
   * authentication verified (the user an auth middleware mounted before the guard put on `request.native`),
   * never from a header the client chooses, which would let one tenant read another's replays. `"global"` for
   * single-tenant services whose keys are random UUIDs.
   */
  scope: ((request: IdempotencyRequest) => string | Promise<string>) | "global";
  /** The request header carrying the key. Default `"Idempotency-Key"`. */
  header?: string;
  /** Methods that are protected; others pass straight through. Default `["POST", "PATCH"]`. */
  methods?: readonly string[];
  /** `true`: a protected request without a key gets 400. Default `false` (it passes through unprotected). */
  required?: boolean;
  /**
   * Lets a request through unguarded when it returns `true` (health checks, internal callers): no key is
   * read, nothing is stored, the handler runs. Checked after `methods`, before anything else.
   */
  skip?: (request: IdempotencyRequest) => boolean | Promise<boolean>;
  /**
   * Shapes the engine's problem answers (400, 409, 410, 413, 422, 503) in the application's own error
   * envelope: receives the problem (type, status, title, detail, the headers the contract requires) and the
   * request, and returns a body, content type and extra headers. The status and the contract's headers
   * (`Retry-After`, `Location`) stay. Returning `undefined` (or throwing) keeps the default
   * `application/problem+json`.
   */
  formatProblem?: (problem: IdempotencyProblem, request: IdempotencyRequest) => ProblemRendering | undefined;
  /** Longest accepted key, after unquoting. Default `255`. */
  maxKeyLength?: number;
  /** What makes a retry "the same request". Default: method, path, query and body. */
  fingerprint?: FingerprintOption;
  /** How long a completed record is kept. Default `86_400_000` (24 h). */
  ttlMs?: number;
  /**
   * The in-flight lease, renewed every `leaseMs / 3` for as long as the handler runs, whether or not its client
   * is still connected (a client that timed out and retries must find the key in progress, not free). It only
   * runs out when the process dies or stops renewing (see `maxExecutionMs`). Default `30_000`.
   */
  leaseMs?: number;
  /**
   * The longest a handler is trusted to run: after it the engine stops renewing the lease, aborts the
   * handler's signal (`context.signal` under `run()`, the bindings' `idempotencySignal`) and emits
   * `execution-limit`. The claim then ends at most `leaseMs` later, and a retry may take the key over (with
   * `onLeaseExpired: "run-again"`), so a hung handler cannot hold its key forever. Between `leaseMs` and
   * `ttlMs`; `false` renews for as long as the handler runs. Default: 10 minutes, within those bounds.
   */
  maxExecutionMs?: number | false;
  /**
   * What a retry finds when the first request's lease expired without a result (the process crashed):
   * `"run-again"` (default) takes the key over and runs; `"conflict"` keeps answering 409 until the TTL ends,
   * for operations that must never run twice.
   */
  onLeaseExpired?: "run-again" | "conflict";
  /**
   * `> 0`: a duplicate of a request that is still running polls the store with backoff for up to this long,
   * then replays the result (or claims and runs, when the first was released); 409 if time runs out.
   * Default `0`: answer 409 at once.
   */
  waitMs?: number;
  /**
   * How soon a duplicate that finds its key in progress is told to retry: the 409's `Retry-After` (rounded up to
   * whole seconds, at least 1) and `IdempotencyInProgressError.retryAfterMs`. Capped by the time left on the
   * running request's lease. Default `1_000`: most handlers finish within seconds, and a client that waits for
   * the whole lease (30 s) would wait far longer than the result takes.
   */
  retryAfterMs?: number;
  /** Which final statuses are stored for replay. Default: below 500 except 408, 409, 425, 429 and 499. */
  shouldStore?: (status: number) => boolean;
  /**
   * Which response headers are replayed, on top of the defaults (everything except hop-by-hop headers and
   * `Set-Cookie`, `WWW-Authenticate`, `Authorization`, `Proxy-Authenticate`). `allow` re-admits headers the
   * defaults drop (e.g. `["set-cookie"]`); `deny` drops more.
   */
  replayHeaders?: { allow?: readonly string[]; deny?: readonly string[] };
  /**
   * Responses with a larger body reach the first client in full, but are completed without their body:
   * retries get 410 instead of a replay, and never a second execution. Default `1_048_576` (1 MiB).
   */
  maxResponseBytes?: number;
  /**
   * Requests with a key whose body is larger than this get 413 problem+json, before any store I/O: the body
   * is read to fingerprint it, and must not be buffered without bound. Default `1_048_576` (1 MiB).
   */
  maxRequestBytes?: number;
  /** A store call slower than this counts as failed (the store is down). Default `2_000`. */
  storeTimeoutMs?: number;
  /**
   * `true`: when the store cannot be reached, run the handler without protection and emit `fail-open`.
   * Default `false`: answer 503 with `Retry-After` and do not run the handler.
   */
  failOpen?: boolean;
  /**
   * `true`: every claimed request runs inside one transaction of the store's database, which holds the
   * claim; the handler writes through it (the binding's `idempotencyTransaction(req)`), and its response is
   * written to the record before `COMMIT`, so the effect and the record commit together or not at all. A
   * stored response commits; any other (a 5xx, `notStarted`) rolls back; a failed commit answers 503. Needs a
   * store with asynchronous transactions (`PostgresStore`). Default `false`.
   */
  transactional?: boolean;
  /** Receives typed events for logs and metrics. Errors it throws are ignored. */
  onEvent?: (event: IdempotencyEvent) => void;
  /** The clock for the engine's time decisions (epoch ms). Default `Date.now`. */
  now?: () => number;
}

/**
 * The options with every default applied, as exposed on `Idempotency.options`.
 *
 * @example
 * ```ts
 * const { leaseMs, ttlMs } = createIdempotency({ store, scope: "global" }).options;
 * ```
 */
export interface ResolvedOptions {
  store: IdempotencyStore;
  scope: IdempotencyOptions["scope"];
  header: string;
  methods: ReadonlySet<string>;
  required: boolean;
  skip: ((request: IdempotencyRequest) => boolean | Promise<boolean>) | undefined;
  formatProblem:
    | ((problem: IdempotencyProblem, request: IdempotencyRequest) => ProblemRendering | undefined)
    | undefined;
  maxKeyLength: number;
  fingerprint: FingerprintOption | undefined;
  ttlMs: number;
  leaseMs: number;
  /** `Number.POSITIVE_INFINITY` when `maxExecutionMs` is `false`. */
  maxExecutionMs: number;
  onLeaseExpired: "run-again" | "conflict";
  waitMs: number;
  retryAfterMs: number;
  shouldStore: (status: number) => boolean;
  /** Lower-case names of the response headers that are never stored, defaults and `replayHeaders` applied. */
  unreplayedHeaders: ReadonlySet<string>;
  maxResponseBytes: number;
  maxRequestBytes: number;
  storeTimeoutMs: number;
  failOpen: boolean;
  transactional: boolean;
  onEvent: ((event: IdempotencyEvent) => void) | undefined;
  now: () => number;
}

const NOT_STORED = new Set([408, 409, 425, 429, 499]);

/**
 * The default storage policy: every final status below 500 except 408 Request Timeout, 409 Conflict,
 * 425 Too Early and 429 Too Many Requests, which say "try again" rather than "this is the outcome", and 499
 * Client Closed Request (nginx's code, which `@koa/bodyparser` also sets for a request whose connection
 * closed before it was parsed), which says the client left before there was an outcome.
 *
 * @example
 * ```ts
 * createIdempotency({ store, scope: "global", shouldStore: (s) => defaultShouldStore(s) && s !== 404 });
 * ```
 */
export function defaultShouldStore(status: number): boolean {
  return status < 500 && !NOT_STORED.has(status);
}

// The compiler keeps this list and IdempotencyOptions in step: a missing or an extra name does not compile.
const KNOWN_OPTIONS = Object.keys({
  store: true,
  scope: true,
  header: true,
  methods: true,
  required: true,
  skip: true,
  formatProblem: true,
  maxKeyLength: true,
  fingerprint: true,
  ttlMs: true,
  leaseMs: true,
  maxExecutionMs: true,
  onLeaseExpired: true,
  waitMs: true,
  retryAfterMs: true,
  shouldStore: true,
  replayHeaders: true,
  maxResponseBytes: true,
  maxRequestBytes: true,
  storeTimeoutMs: true,
  failOpen: true,
  transactional: true,
  onEvent: true,
  now: true,
} satisfies Record<keyof IdempotencyOptions, true>);
const STORE_METHODS = ["begin", "complete", "extend", "release", "get", "delete"] as const;
// RFC 9110 token characters: what a header name and a method may consist of.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function fail(option: string, message: string): never {
  throw new IdempotencyOptionsError(option, message);
}

function headerNames(option: string, value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((name) => typeof name !== "string" || !TOKEN.test(name))) {
    fail(option, `expected an array of header names, got ${describe(value)}.`);
  }
  return value.map((name: string) => name.toLowerCase());
}

function resolveReplayHeaders(value: unknown): Set<string> {
  const unreplayed = new Set(DEFAULT_UNREPLAYED_HEADERS);
  if (value === undefined) return unreplayed;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    fail("replayHeaders", `expected { allow?: string[], deny?: string[] }, got ${describe(value)}.`);
  }
  for (const name of Object.keys(value)) {
    if (name !== "allow" && name !== "deny") {
      fail("replayHeaders", `unknown field "${name}"; expected { allow?: string[], deny?: string[] }.`);
    }
  }
  const { allow, deny } = value as { allow?: unknown; deny?: unknown };
  for (const name of headerNames("replayHeaders.allow", allow)) {
    if (NEVER_STORED_HEADERS.has(name)) {
      fail(
        "replayHeaders.allow",
        `"${name}" is a hop-by-hop or framing header; it describes one connection and is never replayed.`,
      );
    }
    unreplayed.delete(name);
  }
  for (const name of headerNames("replayHeaders.deny", deny)) unreplayed.add(name);
  return unreplayed;
}

const DEFAULT_MAX_EXECUTION_MS = 600_000;

function resolveMaxExecution(value: unknown, leaseMs: number, ttlMs: number): number {
  if (value === false) return Number.POSITIVE_INFINITY;
  if (value === undefined) return Math.max(leaseMs, Math.min(ttlMs, DEFAULT_MAX_EXECUTION_MS));
  const ms = wholeNumberOption("maxExecutionMs", value, { min: 1, unit: "milliseconds or false" });
  if (ms < leaseMs) {
    fail(
      "maxExecutionMs",
      `must be at least leaseMs (${leaseMs}): the first lease already lets a handler run that long.`,
    );
  }
  if (ms > ttlMs) {
    fail(
      "maxExecutionMs",
      `must not exceed ttlMs (${ttlMs}): a handler running past its record's lifetime has no record to complete. ` +
        "Raise ttlMs, or pass false to renew for as long as the handler runs.",
    );
  }
  return ms;
}

function optionalFunction<T>(option: string, value: unknown): T | undefined {
  if (value !== undefined && typeof value !== "function")
    fail(option, `expected a function, got ${describe(value)}.`);
  return value as T | undefined;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
  return Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

/**
 * Checks that `options` is an object and that every name in it is one of `known`, throwing
 * `IdempotencyOptionsError` naming the first unknown option (so a typo such as `leasMs` fails at construction
 * instead of being ignored). The engine uses it for its own options; store and binding authors use it so
 * their options fail the same way.
 *
 * @param options - what the user passed
 * @param known - every option name the constructor accepts
 * @param expected - how to describe a valid value when `options` is not an object, e.g. "`{ client }`"
 *
 * @example
 * ```ts
 * import { checkOptionNames, type IdempotencyStore } from "@idempotency/core";
 *
 * class MyStore implements IdempotencyStore {
 *   constructor(options: { client: MyClient; prefix?: string }) {
 *     checkOptionNames(options, ["client", "prefix"], "an object such as `{ client }`");
 *     // then validate each option's value
 *   }
 * }
 * ```
 */
export function checkOptionNames(options: unknown, known: Iterable<string>, expected: string): void {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    fail("options", `expected ${expected}.`);
  }
  const names = new Set(known);
  for (const name of Object.keys(options)) {
    if (!names.has(name)) fail(name, `unknown option. Known options: ${[...names].join(", ")}.`);
  }
}

/**
 * What {@link wholeNumberOption} accepts: the smallest allowed value, the unit it counts, and a default.
 *
 * @example
 * ```ts
 * const timeout: WholeNumberRule = { min: 1, unit: "milliseconds", fallback: 1_000 };
 * ```
 */
export interface WholeNumberRule {
  /** The smallest value allowed, e.g. `0` or `1`. */
  min: number;
  /** What the number counts, in the plural, for the message: `"milliseconds"`, `"bytes"`, `"records"`. */
  unit: string;
  /** The value when the option is absent; without one, the option is required. */
  fallback?: number;
}

/**
 * Checks one numeric option: a safe whole number of at least `rule.min`, or absent (then `rule.fallback`).
 * Throws `IdempotencyOptionsError` naming the option with what it expected and what it got, the same message
 * for every option of the engine, the stores and the bindings.
 *
 * @param option - the option's name, for the message
 * @param value - what the user passed
 * @param rule - the smallest value, the unit and the default
 *
 * @example
 * ```ts
 * import { checkOptionNames, wholeNumberOption } from "@idempotency/core";
 *
 * class MyStore {
 *   constructor(options: { client: MyClient; timeoutMs?: number }) {
 *     checkOptionNames(options, ["client", "timeoutMs"], "an object such as `{ client }`");
 *     this.timeoutMs = wholeNumberOption("timeoutMs", options.timeoutMs, {
 *       min: 1,
 *       unit: "milliseconds",
 *       fallback: 1_000,
 *     }); // "expected a positive whole number of milliseconds, got -5."
 *   }
 * }
 * ```
 */
export function wholeNumberOption(option: string, value: unknown, rule: WholeNumberRule): number {
  if (value === undefined && rule.fallback !== undefined) return rule.fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < rule.min) {
    const expected =
      rule.min === 1
        ? `a positive whole number of ${rule.unit}`
        : rule.min === 0
          ? `a whole number of ${rule.unit}, 0 or more`
          : `a whole number of ${rule.unit}, at least ${rule.min}`;
    fail(option, `expected ${expected}, got ${describe(value)}.`);
  }
  return value;
}

/**
 * Checks one boolean option: `true`, `false`, or absent (then `fallback`). Throws `IdempotencyOptionsError`
 * naming the option otherwise, so `"false"` (a string from an environment variable) fails at construction
 * instead of counting as true.
 *
 * @param option - the option's name, for the message
 * @param value - what the user passed
 * @param fallback - the value when the option is absent
 *
 * @example
 * ```ts
 * import { booleanOption } from "@idempotency/core";
 *
 * const allRoutes = booleanOption("allRoutes", options.allRoutes, false); // "expected true or false, got \"yes\"."
 * ```
 */
export function booleanOption(option: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") fail(option, `expected true or false, got ${describe(value)}.`);
  return value;
}

function transactionalOption(store: IdempotencyStore, value: unknown): boolean {
  const transactional = booleanOption("transactional", value, false);
  if (!transactional) return false;
  const name = store.constructor?.name ?? "this store";
  if (!isTransactionalStore(store)) {
    fail(
      "transactional",
      `${name} has no transactions: use a store that commits your writes with the record (PostgresStore), or leave transactional off.`,
    );
  }
  if (store.synchronousTransactions) {
    fail(
      "transactional",
      `${name} runs only synchronous transactions, and an HTTP handler is asynchronous: use idempotency.transaction() with a synchronous function, or PostgresStore.`,
    );
  }
  return true;
}

/** Validates every option and applies the defaults; throws `IdempotencyOptionsError` naming the option. */
export function resolveOptions(options: IdempotencyOptions): ResolvedOptions {
  checkOptionNames(options, KNOWN_OPTIONS, "an object with at least `store` and `scope`");

  const store = options.store as unknown;
  if (typeof store !== "object" || store === null) {
    fail("store", "required: pass a store, e.g. `new MemoryStore()` or an adapter such as `SqliteStore`.");
  }
  for (const method of STORE_METHODS) {
    if (typeof (store as Record<string, unknown>)[method] !== "function") {
      fail("store", `the store has no \`${method}\` method; it must implement IdempotencyStore.`);
    }
  }

  const scope = options.scope as unknown;
  if (scope !== "global" && typeof scope !== "function") {
    fail(
      "scope",
      'required: a function `(request) => string` naming the principal (tenant, user), or "global" for a ' +
        `single-tenant service; got ${describe(scope)}.`,
    );
  }

  const header = options.header ?? "Idempotency-Key";
  if (typeof header !== "string" || !TOKEN.test(header)) {
    fail("header", `expected a valid HTTP header name, got ${describe(header)}.`);
  }

  const methods = options.methods ?? ["POST", "PATCH"];
  if (!Array.isArray(methods) || methods.length === 0) {
    fail("methods", `expected a non-empty array of HTTP methods, got ${describe(methods)}.`);
  }
  for (const method of methods) {
    if (typeof method !== "string" || !TOKEN.test(method)) {
      fail("methods", `expected HTTP method names, got ${describe(method)}.`);
    }
  }

  const required = booleanOption("required", options.required, false);
  const maxKeyLength = wholeNumberOption("maxKeyLength", options.maxKeyLength, {
    min: 1,
    unit: "characters",
    fallback: 255,
  });

  const fingerprint = options.fingerprint as unknown;
  if (fingerprint !== undefined && fingerprint !== false && typeof fingerprint !== "function") {
    const headers = (fingerprint as { headers?: unknown } | null)?.headers;
    if (
      typeof fingerprint !== "object" ||
      !Array.isArray(headers) ||
      headers.some((name) => typeof name !== "string" || !TOKEN.test(name))
    ) {
      fail(
        "fingerprint",
        "expected false, { headers: string[] } of header names, or a function (request) => string.",
      );
    }
  }

  const ttlMs = wholeNumberOption("ttlMs", options.ttlMs, {
    min: 1,
    unit: "milliseconds",
    fallback: 86_400_000,
  });
  const leaseMs = wholeNumberOption("leaseMs", options.leaseMs, {
    min: 1,
    unit: "milliseconds",
    fallback: 30_000,
  });
  if (leaseMs < 3) fail("leaseMs", "must be at least 3 ms, since the lease is renewed every leaseMs / 3.");
  if (leaseMs > ttlMs)
    fail("leaseMs", `must not exceed ttlMs (${ttlMs}); a lease cannot outlive its record.`);

  const maxExecutionMs = resolveMaxExecution(options.maxExecutionMs, leaseMs, ttlMs);
  const failOpen = booleanOption("failOpen", options.failOpen, false);
  const transactional = transactionalOption(store as IdempotencyStore, options.transactional);
  if (failOpen && transactional) {
    fail(
      "failOpen",
      "cannot be combined with transactional: true: the handler writes through the store's own database, so with the store down it could not run either.",
    );
  }
  const retryAfterMs = wholeNumberOption("retryAfterMs", options.retryAfterMs, {
    min: 1,
    unit: "milliseconds",
    fallback: 1_000,
  });

  const onLeaseExpired = options.onLeaseExpired ?? "run-again";
  if (onLeaseExpired !== "run-again" && onLeaseExpired !== "conflict") {
    fail("onLeaseExpired", `expected "run-again" or "conflict", got ${describe(onLeaseExpired)}.`);
  }

  const waitMs = wholeNumberOption("waitMs", options.waitMs, { min: 0, unit: "milliseconds", fallback: 0 });
  const bytes = { min: 0, unit: "bytes", fallback: 1_048_576 };
  const maxResponseBytes = wholeNumberOption("maxResponseBytes", options.maxResponseBytes, bytes);
  const maxRequestBytes = wholeNumberOption("maxRequestBytes", options.maxRequestBytes, bytes);
  // A store call must be able to fail before the lease it protects runs out.
  const storeTimeoutMs = wholeNumberOption("storeTimeoutMs", options.storeTimeoutMs, {
    min: 1,
    unit: "milliseconds",
    fallback: Math.min(2_000, Math.ceil(leaseMs / 3)),
  });
  if (storeTimeoutMs >= leaseMs) {
    fail(
      "storeTimeoutMs",
      `must be shorter than leaseMs (${leaseMs}): a renewal that takes longer than the lease cannot keep it.`,
    );
  }

  return {
    store: options.store,
    scope: options.scope,
    header,
    methods: new Set(methods.map((method) => method.toUpperCase())),
    required,
    skip: optionalFunction("skip", options.skip),
    formatProblem: optionalFunction("formatProblem", options.formatProblem),
    maxKeyLength,
    fingerprint: options.fingerprint,
    ttlMs,
    leaseMs,
    maxExecutionMs,
    onLeaseExpired,
    waitMs,
    retryAfterMs,
    unreplayedHeaders: resolveReplayHeaders(options.replayHeaders),
    maxResponseBytes,
    maxRequestBytes,
    storeTimeoutMs,
    failOpen,
    transactional,
    shouldStore: optionalFunction("shouldStore", options.shouldStore) ?? defaultShouldStore,
    onEvent: optionalFunction("onEvent", options.onEvent),
    now: optionalFunction("now", options.now) ?? (() => Date.now()),
  };
}
