import { IdempotencyOptionsError } from "./errors.js";
import type { IdempotencyEvent } from "./events.js";
import type { FingerprintOption } from "./fingerprint.js";
import type { IdempotencyRequest } from "./request.js";
import type { IdempotencyStore } from "./store.js";

/**
 * The options of `createIdempotency`; every binding takes the same object.
 *
 * @example
 * ```ts
 * const options: IdempotencyOptions = {
 *   store: new MemoryStore(),
 *   scope: (request) => tenantOf(request.native),
 *   required: true,
 * };
 * ```
 */
export interface IdempotencyOptions {
  /** Where records live. */
  store: IdempotencyStore;
  /**
   * The principal that owns a key (tenant, user, account): records are keyed by (scope, method, path, key),
   * so two principals using the same key never see each other's records. `"global"` for single-tenant
   * services whose keys are random UUIDs.
   */
  scope: ((request: IdempotencyRequest) => string | Promise<string>) | "global";
  /** The request header carrying the key. Default `"Idempotency-Key"`. */
  header?: string;
  /** Methods that are protected; others pass straight through. Default `["POST", "PATCH"]`. */
  methods?: readonly string[];
  /** `true`: a protected request without a key gets 400. Default `false` (it passes through unprotected). */
  required?: boolean;
  /** Longest accepted key, after unquoting. Default `255`. */
  maxKeyLength?: number;
  /** What makes a retry "the same request". Default: method, path, query and body. */
  fingerprint?: FingerprintOption;
  /** How long a completed record is kept. Default `86_400_000` (24 h). */
  ttlMs?: number;
  /** The in-flight lease, renewed every `leaseMs / 3` while the handler runs. Default `30_000`. */
  leaseMs?: number;
  /**
   * What a retry finds when the first request's lease expired without a result (the process crashed):
   * `"run-again"` (default) takes the key over and runs; `"conflict"` keeps answering 409 until the TTL ends,
   * for operations that must never run twice.
   */
  onLeaseExpired?: "run-again" | "conflict";
  /** Which final statuses are stored for replay. Default: below 500 except 408, 409, 425 and 429. */
  shouldStore?: (status: number) => boolean;
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
  maxKeyLength: number;
  fingerprint: FingerprintOption | undefined;
  ttlMs: number;
  leaseMs: number;
  onLeaseExpired: "run-again" | "conflict";
  shouldStore: (status: number) => boolean;
  onEvent: ((event: IdempotencyEvent) => void) | undefined;
  now: () => number;
}

const NOT_STORED = new Set([408, 409, 425, 429]);

/**
 * The default storage policy: every final status below 500 except 408 Request Timeout, 409 Conflict,
 * 425 Too Early and 429 Too Many Requests, which say "try again" rather than "this is the outcome".
 *
 * @example
 * ```ts
 * createIdempotency({ store, scope: "global", shouldStore: (s) => defaultShouldStore(s) && s !== 404 });
 * ```
 */
export function defaultShouldStore(status: number): boolean {
  return status < 500 && !NOT_STORED.has(status);
}

const KNOWN_OPTIONS = new Set<string>([
  "store",
  "scope",
  "header",
  "methods",
  "required",
  "maxKeyLength",
  "fingerprint",
  "ttlMs",
  "leaseMs",
  "onLeaseExpired",
  "shouldStore",
  "onEvent",
  "now",
]);
const STORE_METHODS = ["begin", "complete", "extend", "release", "get", "delete"] as const;
// RFC 9110 token characters: what a header name and a method may consist of.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function fail(option: string, message: string): never {
  throw new IdempotencyOptionsError(option, message);
}

function positiveInteger(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    fail(option, `expected a positive whole number of milliseconds, got ${describe(value)}.`);
  }
  return value;
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

/** Validates every option and applies the defaults; throws `IdempotencyOptionsError` naming the option. */
export function resolveOptions(options: IdempotencyOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null) {
    fail("options", "expected an object with at least `store` and `scope`.");
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name))
      fail(name, `unknown option. Known options: ${[...KNOWN_OPTIONS].join(", ")}.`);
  }

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

  if (options.required !== undefined && typeof options.required !== "boolean") {
    fail("required", `expected true or false, got ${describe(options.required)}.`);
  }

  const maxKeyLength = options.maxKeyLength ?? 255;
  if (typeof maxKeyLength !== "number" || !Number.isSafeInteger(maxKeyLength) || maxKeyLength < 1) {
    fail(
      "maxKeyLength",
      `expected a whole number of characters of at least 1, got ${describe(maxKeyLength)}.`,
    );
  }

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

  const ttlMs = positiveInteger("ttlMs", options.ttlMs, 86_400_000);
  const leaseMs = positiveInteger("leaseMs", options.leaseMs, 30_000);
  if (leaseMs < 3) fail("leaseMs", "must be at least 3 ms, since the lease is renewed every leaseMs / 3.");
  if (leaseMs > ttlMs)
    fail("leaseMs", `must not exceed ttlMs (${ttlMs}); a lease cannot outlive its record.`);

  const onLeaseExpired = options.onLeaseExpired ?? "run-again";
  if (onLeaseExpired !== "run-again" && onLeaseExpired !== "conflict") {
    fail("onLeaseExpired", `expected "run-again" or "conflict", got ${describe(onLeaseExpired)}.`);
  }

  return {
    store: options.store,
    scope: options.scope,
    header,
    methods: new Set(methods.map((method) => method.toUpperCase())),
    required: options.required ?? false,
    maxKeyLength,
    fingerprint: options.fingerprint,
    ttlMs,
    leaseMs,
    onLeaseExpired,
    shouldStore: optionalFunction("shouldStore", options.shouldStore) ?? defaultShouldStore,
    onEvent: optionalFunction("onEvent", options.onEvent),
    now: optionalFunction("now", options.now) ?? (() => Date.now()),
  };
}
