import { randomUUID } from "node:crypto";
import { decodeResponse, encodeResponse, type StoredResponse } from "./encoding.js";
import {
  IdempotencyAbortError,
  IdempotencyError,
  IdempotencyInProgressError,
  IdempotencyInvalidKeyError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  IdempotencyOptionsError,
  IdempotencyRequestTooLargeError,
  IdempotencyResultNotStoredError,
  IdempotencyStoreError,
  toStoreError,
} from "./errors.js";
import type { IdempotencyEvent, IdempotencyEventBase } from "./events.js";
import { createFingerprinter, hashParts, withBoundedBody } from "./fingerprint.js";
import { contentLength, normalizeHeaders, type ResponseHeadersInput, storableHeaders } from "./headers.js";
import { identityKey } from "./identity.js";
import { parseIdempotencyKey } from "./key.js";
import { type IdempotencyOptions, type ResolvedOptions, resolveOptions } from "./options.js";
import {
  type IdempotencyProblem,
  type PreparedResponse,
  problems,
  renderProblem,
  renderWith,
} from "./problems.js";
import type { IdempotencyRequest } from "./request.js";
import type { BeginResult, IdempotencyStore, StoreCallOptions } from "./store.js";

/**
 * What a binding does with a request, as decided by {@link Idempotency.handle}:
 * - `pass`: not protected (method not covered, or no key and keys are optional): call the next handler;
 * - `respond`: send `response` as it is (a replay or a problem) and do not run the handler;
 * - `execute`: run the handler and report its response through `execution`.
 *
 * @example
 * ```ts
 * const decision = await idempotency.handle(request);
 * if (decision.action === "pass") return next();
 * if (decision.action === "respond") return send(decision.response);
 * runHandler(decision.execution);
 * ```
 */
export type Decision =
  | { action: "pass" }
  | { action: "respond"; response: PreparedResponse; replayed: boolean }
  | { action: "execute"; execution: Execution };

/**
 * The hand-back for one claimed request: the binding reports the handler's response through it, and the
 * engine stores or releases the record. All policy (what is stored, when the client may see the end of the
 * response) lives here, so a binding is a translation.
 *
 * The order a binding follows: `start` once when the response head is known, `write` for each body chunk
 * (forward what it returns), then `await end()` and forward what it returns before finishing the response.
 * Headers must reach the client no earlier than the first forwarded bytes (or the end). `notStarted` and
 * `abandon` may come at any point. The lease is renewed until `end` or `abandon`, whatever the client
 * connection does: a client that left (its own timeout) and retries must find the key in progress while the
 * handler still runs, so a binding never stops renewal on a disconnect; it reports the response produced
 * later as usual, or `abandon` once no response can ever come.
 *
 * @example
 * ```ts
 * // inside a binding, for an "execute" decision:
 * execution.start(res.statusCode, res.getHeaders());
 * socket.write(execution.write(chunk)); // forward what may be sent now
 * socket.end(await execution.end()); // the record is completed before the final bytes go out
 * ```
 */
export interface Execution {
  /**
   * The response head. Calling it again before `write` has returned any bytes to send replaces the head and
   * discards the body captured so far (nothing of it reached the client), e.g. when an error handler takes
   * over a response the handler had begun; once bytes went out, the head is final and later calls are ignored.
   */
  start(status: number, headers: ResponseHeadersInput): void;
  /**
   * Captures a body chunk and returns the bytes that may be sent now. When a `Content-Length` says this
   * chunk completes the body, its last byte is held back until `end`, so the client cannot see the whole
   * response before the record is completed.
   */
  write(chunk: Uint8Array): Uint8Array;
  /**
   * Captures the last chunk, completes or releases the record, then resolves with the bytes still to send
   * (held-back bytes plus `chunk`). Never rejects; calls after the first resolve with no bytes.
   */
  end(chunk?: Uint8Array): Promise<Uint8Array>;
  /** The handler declares that it did nothing: the claim is released and nothing is stored, whatever the status. */
  notStarted(): void;
  /** The handler finished without producing any response: release the claim so a retry runs again. */
  abandon(): Promise<void>;
  /**
   * Aborted when the handler should stop early: its lease was lost to another request, or it ran past
   * `maxExecutionMs`. `reason` is an `IdempotencyAbortError` saying which. Bindings hand it to handlers
   * (`idempotencySignal`).
   */
  readonly signal: AbortSignal;
}

/**
 * An idempotency engine, created by {@link createIdempotency}. Framework bindings call `handle`; the
 * options it was created with are available as `options`.
 *
 * @example
 * ```ts
 * const idempotency: Idempotency = createIdempotency({ store, scope: "global" });
 * idempotency.options.leaseMs; // 30000
 * ```
 */
export interface Idempotency {
  /** The validated options with every default applied. */
  readonly options: Readonly<ResolvedOptions>;
  /**
   * Decides what happens to a request: pass it through, answer it (replay or problem), or run it under a
   * fresh claim. Rejects only when the user's `scope` or `fingerprint` function throws or misbehaves.
   */
  handle(request: IdempotencyRequest): Promise<Decision>;
  /**
   * Gives any async function (a queue consumer, a job) the same guarantee: the first call with `key` runs
   * `fn` and stores its JSON-serialisable result; duplicates return the stored result (parsed from JSON)
   * without running `fn`. A concurrent duplicate waits up to `waitMs`, then throws
   * `IdempotencyInProgressError`; a different `fingerprint` throws `IdempotencyKeyReusedError`; a throw from
   * `fn` releases the key and is rethrown, so a retry runs again. With the store down it throws
   * `IdempotencyStoreError` (or runs `fn` unprotected with `failOpen`).
   *
   * @example
   * ```ts
   * consumer.on("message", async (message) => {
   *   const receipt = await idempotency.run(message.id, async ({ signal }) => {
   *     return payments.charge(message.body, { signal });
   *   }, { scope: message.tenantId, fingerprint: message.rawBody });
   *   await message.ack();
   * });
   * ```
   */
  run<T>(key: string, fn: (context: RunContext) => T | Promise<T>, options?: RunOptions): Promise<Awaited<T>>;
  /**
   * Deletes the record of one identity, whatever its state, so that support staff can unblock a customer
   * without knowing how identities are hashed. For an HTTP record give the key as the client sent it (the
   * header's value), the `method` and the concrete `path` (no query string); for a `run()` record only the
   * key. `scope` names the principal, as the engine's `scope` function would (`"global"` by default when the
   * engine's scope is `"global"`). Resolves `true` when a live record was deleted.
   *
   * The risk is the point: the next request with this key runs the handler again, even if the first one
   * completed (a second charge). Forget only what you know did not happen, or must happen again. A request
   * still running when its record is forgotten loses its claim (`lease-lost`), and its result is not stored.
   *
   * @example
   * ```ts
   * // A customer's POST /orders with key "order-7" is stuck behind a crashed request under "conflict":
   * await idempotency.forget("order-7", { scope: "tenant-42", method: "POST", path: "/orders" });
   * await idempotency.forget(message.id, { scope: message.tenantId }); // a run() record
   * ```
   */
  forget(key: string, target?: ForgetTarget): Promise<boolean>;
}

/**
 * Which record `forget` deletes: the principal, and for an HTTP record its method and concrete path.
 *
 * @example
 * ```ts
 * const target: ForgetTarget = { scope: "tenant-42", method: "POST", path: "/orders" };
 * await idempotency.forget("order-7", target);
 * ```
 */
export interface ForgetTarget {
  /** The principal, as the engine's `scope` function names it. Default `"global"` for a `"global"` engine. */
  scope?: string;
  /** The HTTP method of the record (any case); give it with `path`, or neither for a `run()` record. */
  method?: string;
  /** The concrete request path, without the query string, e.g. `"/orders"`. */
  path?: string;
}

/** Reports an event to `onEvent`, given as a builder so that nothing is built when nobody listens. */
type Emit = (event: () => IdempotencyEvent) => void;

const PASS: Decision = { action: "pass" };
const CLAIMS = Symbol.for("@idempotency/core:claims");
const TOO_LARGE = new IdempotencyRequestTooLargeError(0).code;
const BODYLESS_STATUS = (status: number) => status < 200 || status === 204 || status === 304;
const EMPTY = new Uint8Array(0);
/** `complete` is tried this many times before the engine gives up and lets the lease expire. */
const COMPLETE_ATTEMPTS = 3;
const COMPLETE_RETRY_DELAY_MS = 100;
/** Waiting duplicates poll the store after 25 ms, then back off by doubling up to 1 s between polls. */
const WAIT_FIRST_POLL_MS = 25;
const WAIT_MAX_POLL_MS = 1_000;
/** The method and path of function-API records: no HTTP path is empty, so they never meet HTTP records. */
const RUN_METHOD = "RUN";
const RUN_PATH = "";

/** How a key's record stands after `begin` (and any waiting), as the engine sees it. */
type Outcome =
  | { state: "claimed"; execution: ClaimedExecution }
  | { state: "in-flight"; leaseRemainingMs: number }
  | { state: "completed"; response: Uint8Array | null }
  | { state: "key-reused" }
  | { state: "unavailable"; error: IdempotencyStoreError };

/**
 * Creates the framework-free idempotency engine. Bindings (`@idempotency/express`, `/hono`, `/koa`) wrap it;
 * use it directly to write a binding of your own, or call `run` to protect any async function.
 *
 * @example
 * ```ts
 * import { createIdempotency, MemoryStore } from "@idempotency/core";
 *
 * const idempotency = createIdempotency({
 *   store: new MemoryStore(),
 *   scope: (request) => request.headers.get("x-tenant-id") ?? "anonymous",
 * });
 *
 * const decision = await idempotency.handle(request);
 * if (decision.action === "respond") send(decision.response);
 * ```
 */
export function createIdempotency(options: IdempotencyOptions): Idempotency {
  const resolved = resolveOptions(options);
  const { now, leaseMs, ttlMs } = resolved;
  const store = guardStore(resolved.store, resolved.storeTimeoutMs);
  const fingerprintOf = createFingerprinter(resolved.fingerprint, resolved.maxRequestBytes);
  const headerName = resolved.header;
  const { skip, formatProblem } = resolved;
  /** A problem as the application wants it answered: `formatProblem`'s rendering, or problem+json. */
  const present: (problem: IdempotencyProblem, request: IdempotencyRequest) => PreparedResponse =
    formatProblem ? (problem, request) => renderWith(formatProblem, problem, request) : renderProblem;
  const refuse = (problem: IdempotencyProblem, request: IdempotencyRequest): Decision => ({
    action: "respond",
    response: present(problem, request),
    replayed: false,
  });
  // User functions get a request whose body() is bounded by maxRequestBytes unless they pass a larger limit.
  const boundsUserBody = typeof resolved.scope === "function" || typeof resolved.fingerprint === "function";

  function emit(event: () => IdempotencyEvent): void {
    if (!resolved.onEvent) return;
    try {
      resolved.onEvent(event());
    } catch {
      // A failing logger must never change how a request is answered.
    }
  }

  function eventBase(key: string, method: string, path: string, startedAt: number) {
    return (): IdempotencyEventBase => {
      const at = now();
      return { key, method, path, at, elapsedMs: at - startedAt };
    };
  }

  async function scopeOf(request: IdempotencyRequest): Promise<string> {
    if (resolved.scope === "global") return "global";
    const scope = await resolved.scope(request);
    if (typeof scope !== "string" || scope.length === 0) {
      throw new IdempotencyError(
        "ERR_IDEMPOTENCY_SCOPE",
        `The scope function must return a non-empty string naming the principal; it returned ${
          typeof scope === "string" ? "an empty string" : typeof scope
        }.`,
      );
    }
    return scope;
  }

  /**
   * Claims the key, or finds out why not. A duplicate of a running request polls with the same token for up
   * to `waitMs`: each poll is a `begin`, so a record released meanwhile is claimed atomically, never read and
   * then written.
   */
  async function begin(
    key: string,
    fingerprint: string,
    base: () => IdempotencyEventBase,
    waitMs: number,
  ): Promise<Outcome> {
    const token = randomUUID();
    const args = {
      token,
      fingerprint,
      leaseMs,
      ttlMs,
      allowTakeover: resolved.onLeaseExpired === "run-again",
    };
    const waitStartedAt = now();
    let pollMs = WAIT_FIRST_POLL_MS;
    for (;;) {
      let result: BeginResult;
      try {
        result = await store.begin(key, args);
      } catch (error) {
        const storeError = toStoreError("begin", error);
        emit(() =>
          resolved.failOpen
            ? { ...base(), type: "fail-open", error: storeError }
            : { ...base(), type: "store-error", operation: "begin", error: storeError },
        );
        return { state: "unavailable", error: storeError };
      }
      if (result.state === "claimed") {
        emit(() => ({ ...base(), type: "claimed", takeover: result.takeover }));
        return {
          state: "claimed",
          execution: new ClaimedExecution(resolved, store, key, token, base, emit, now()),
        };
      }
      if (result.fingerprint !== fingerprint) {
        emit(() => ({ ...base(), type: "key-reused" }));
        return { state: "key-reused" };
      }
      if (result.state === "completed") return { state: "completed", response: result.response };
      const waitedMs = now() - waitStartedAt;
      const waitLeftMs = waitMs - waitedMs;
      if (waitLeftMs <= 0) {
        emit(() => ({ ...base(), type: "in-progress", leaseRemainingMs: result.leaseRemainingMs, waitedMs }));
        return { state: "in-flight", leaseRemainingMs: result.leaseRemainingMs };
      }
      // Poll again no later than the moment the lease could be taken over.
      await delay(Math.max(1, Math.min(pollMs, waitLeftMs, result.leaseRemainingMs + 1)));
      pollMs = Math.min(pollMs * 2, WAIT_MAX_POLL_MS);
    }
  }

  async function handle(request: IdempotencyRequest): Promise<Decision> {
    const startedAt = now();
    if (!resolved.methods.has(request.method) || (isObject(request.native) && claims.has(request.native))) {
      return PASS;
    }
    if (skip !== undefined && (await skip(request)) === true) return PASS;
    const value = request.headers.get(headerName);
    if (value === null) {
      return resolved.required ? refuse(problems.missingKey(headerName), request) : PASS;
    }
    const parsed = parseIdempotencyKey(value, resolved.maxKeyLength);
    if (!parsed.ok) return refuse(problems.invalidKey(headerName, parsed.reason), request);

    let scope: string;
    let fingerprint: string;
    const seen = boundsUserBody ? withBoundedBody(request, resolved.maxRequestBytes) : request;
    try {
      // The fingerprint first: a body over maxRequestBytes is answered 413 before any user function runs
      // (a binding may have to answer before authentication has, e.g. while Fastify reads the body).
      fingerprint = await fingerprintOf(seen);
      scope = await scopeOf(seen);
    } catch (error) {
      // By code, not class: a binding may load another build of this module (ESM and CJS copies differ).
      if ((error as { code?: unknown } | null)?.code !== TOO_LARGE) throw error;
      return refuse(problems.requestTooLarge(headerName, resolved.maxRequestBytes), request);
    }
    const key = identityKey(scope, request.method, request.path, parsed.key);
    const base = eventBase(key, request.method, request.path, startedAt);
    const outcome = await begin(key, fingerprint, base, resolved.waitMs);
    switch (outcome.state) {
      case "claimed":
        if (isObject(request.native)) claims.set(request.native, outcome.execution);
        return { action: "execute", execution: outcome.execution };
      case "key-reused":
        return refuse(problems.keyReused(headerName), request);
      case "in-flight":
        return refuse(
          lockedForGood(outcome.leaseRemainingMs)
            ? problems.keyLocked(headerName)
            : problems.inProgress(headerName, retryHint(outcome.leaseRemainingMs)),
          request,
        );
      case "unavailable":
        return resolved.failOpen ? PASS : refuse(problems.storeUnavailable(), request);
      case "completed":
        return replay(outcome.response, base, emit, (problem) => refuse(problem, request));
    }
  }

  async function run<T>(
    key: string,
    fn: (context: RunContext) => T | Promise<T>,
    callOptions: RunOptions = {},
  ): Promise<Awaited<T>> {
    const startedAt = now();
    const call = resolveRunCall(key, fn, callOptions, resolved);
    const identity = identityKey(call.scope, RUN_METHOD, RUN_PATH, key);
    const base = eventBase(identity, RUN_METHOD, RUN_PATH, startedAt);
    const outcome = await begin(identity, call.fingerprint, base, call.waitMs);
    switch (outcome.state) {
      case "key-reused":
        throw new IdempotencyKeyReusedError();
      case "in-flight":
        if (lockedForGood(outcome.leaseRemainingMs)) throw new IdempotencyKeyLockedError();
        throw new IdempotencyInProgressError(retryHint(outcome.leaseRemainingMs), outcome.leaseRemainingMs);
      case "unavailable":
        if (!resolved.failOpen) throw outcome.error;
        return await fn({ key, signal: new AbortController().signal, notStarted: () => {} });
      case "completed":
        return replayResult(outcome.response, base, emit) as Awaited<T>;
      case "claimed":
        return runClaimed(key, fn, outcome.execution);
    }
  }

  /** An expired lease that is not taken over: the first request stopped and `"conflict"` keeps the key locked. */
  function lockedForGood(leaseRemainingMs: number): boolean {
    return leaseRemainingMs <= 0 && resolved.onLeaseExpired === "conflict";
  }

  /** When a duplicate should retry: the configured hint, sooner when the lease ends first. */
  function retryHint(leaseRemainingMs: number): number {
    return Math.max(1, Math.min(resolved.retryAfterMs, leaseRemainingMs));
  }

  async function forget(key: string, target: ForgetTarget = {}): Promise<boolean> {
    return store.delete(forgottenIdentity(key, target, resolved));
  }

  return { options: resolved, handle, run, forget };
}

const FORGET_OPTIONS = new Set(["scope", "method", "path"]);

/** The hashed identity `forget` deletes, or a typed error naming what is wrong with its arguments. */
function forgottenIdentity(key: unknown, target: ForgetTarget, resolved: ResolvedOptions): string {
  if (typeof target !== "object" || target === null) {
    throw new IdempotencyOptionsError("forget target", "expected an object { scope?, method?, path? }.");
  }
  for (const name of Object.keys(target)) {
    if (!FORGET_OPTIONS.has(name)) {
      throw new IdempotencyOptionsError(name, "unknown forget() option. Known: scope, method, path.");
    }
  }
  const { scope, method, path } = target;
  if (scope !== undefined && (typeof scope !== "string" || scope.length === 0)) {
    throw new IdempotencyOptionsError("scope", "expected a non-empty string naming the principal.");
  }
  if (scope === undefined && resolved.scope !== "global") {
    throw new IdempotencyOptionsError(
      "scope",
      "forget() needs { scope } naming the principal, because the engine's scope is a function of a request.",
    );
  }
  if ((method === undefined) !== (path === undefined)) {
    throw new IdempotencyOptionsError(
      method === undefined ? "method" : "path",
      "give both method and path for an HTTP record, or neither for a run() record.",
    );
  }
  if (typeof key !== "string") {
    throw new IdempotencyInvalidKeyError(`forget() needs the key as a string; got ${typeof key}.`);
  }
  if (method === undefined || path === undefined) {
    if (key.length === 0 || key.length > resolved.maxKeyLength) {
      throw new IdempotencyInvalidKeyError(
        `forget() needs a run() key of 1 to ${resolved.maxKeyLength} characters; got ${key.length}.`,
      );
    }
    return identityKey(scope ?? "global", RUN_METHOD, RUN_PATH, key);
  }
  if (typeof method !== "string" || method.length === 0) {
    throw new IdempotencyOptionsError("method", 'expected an HTTP method such as "POST".');
  }
  if (typeof path !== "string" || !path.startsWith("/") || path.includes("?")) {
    throw new IdempotencyOptionsError(
      "path",
      `expected the concrete request path without the query string, such as "/orders/42"; got ${JSON.stringify(path)}.`,
    );
  }
  const parsed = parseIdempotencyKey(key, resolved.maxKeyLength);
  if (!parsed.ok) throw new IdempotencyInvalidKeyError(`forget() got an invalid key: ${parsed.reason}.`);
  return identityKey(scope ?? "global", method.toUpperCase(), path, parsed.key);
}

/**
 * What `run` passes to the function it protects: the key, a signal that aborts when the call should stop
 * (it lost its claim, or ran past `maxExecutionMs`), and `notStarted()`. Annotate with it when the protected function is declared apart from the `run` call.
 *
 * @example
 * ```ts
 * import type { RunContext } from "@idempotency/core";
 *
 * async function charge(payment: Payment, { key, signal }: RunContext) {
 *   return payments.charge(payment, { idempotencyKey: key, signal });
 * }
 *
 * const receipt = await idempotency.run(message.id, (context) => charge(message.body, context));
 * ```
 */
export interface RunContext {
  /** The caller's key, as given to `run`. */
  readonly key: string;
  /**
   * Aborted when this call should stop early: it lost its claim (another call took the key over; the result
   * will not be stored), or it ran past `maxExecutionMs` (its lease is no longer renewed). `signal.reason` is
   * an `IdempotencyAbortError` whose `code` says which.
   */
  readonly signal: AbortSignal;
  /** Declares that the call did nothing (e.g. validation failed): the claim is released, nothing is stored. */
  notStarted(): void;
}

/**
 * Per-call options of `run`, its third argument: the principal that owns the key, what makes two calls the
 * same call, and how long a duplicate waits for a running call.
 *
 * @example
 * ```ts
 * import type { RunOptions } from "@idempotency/core";
 *
 * const options: RunOptions = { scope: message.tenantId, fingerprint: message.rawBody, waitMs: 5_000 };
 * const receipt = await idempotency.run(message.id, () => payments.charge(message.body), options);
 * ```
 */
export interface RunOptions {
  /**
   * The principal that owns the key (tenant, user). Required when the engine's `scope` is a function, since
   * there is no HTTP request to derive it from; defaults to `"global"` when the engine's scope is `"global"`.
   */
  scope?: string;
  /**
   * What makes a call with this key "the same call", e.g. the message payload. A duplicate with a different
   * fingerprint throws `IdempotencyKeyReusedError`. Default: none (any call with the key is a duplicate).
   */
  fingerprint?: string | Uint8Array;
  /** Overrides the engine's `waitMs` for this call. */
  waitMs?: number;
}

const RUN_OPTIONS = new Set(["scope", "fingerprint", "waitMs"]);

function resolveRunCall(
  key: unknown,
  fn: unknown,
  options: RunOptions,
  resolved: ResolvedOptions,
): { scope: string; fingerprint: string; waitMs: number } {
  if (typeof key !== "string" || key.length === 0 || key.length > resolved.maxKeyLength) {
    throw new IdempotencyInvalidKeyError(
      `run() needs a key: a non-empty string of at most ${resolved.maxKeyLength} characters (maxKeyLength), ` +
        `such as a message id; got ${typeof key === "string" ? `a string of ${key.length}` : typeof key}.`,
    );
  }
  if (typeof fn !== "function") {
    throw new TypeError(`run() needs a function to protect as its second argument; got ${typeof fn}.`);
  }
  if (typeof options !== "object" || options === null) {
    throw new IdempotencyOptionsError("run options", "expected an object { scope?, fingerprint?, waitMs? }.");
  }
  for (const name of Object.keys(options)) {
    if (!RUN_OPTIONS.has(name)) {
      throw new IdempotencyOptionsError(name, "unknown run() option. Known: scope, fingerprint, waitMs.");
    }
  }
  const { scope, fingerprint, waitMs = resolved.waitMs } = options;
  if (scope !== undefined && (typeof scope !== "string" || scope.length === 0)) {
    throw new IdempotencyOptionsError("scope", "expected a non-empty string naming the principal.");
  }
  if (scope === undefined && resolved.scope !== "global") {
    throw new IdempotencyOptionsError(
      "scope",
      'run() needs { scope } naming the principal, because the engine\'s scope is a function of an HTTP request. Pass "global" for single-tenant work.',
    );
  }
  if (fingerprint !== undefined && typeof fingerprint !== "string" && !(fingerprint instanceof Uint8Array)) {
    throw new IdempotencyOptionsError("fingerprint", "expected a string or a Uint8Array.");
  }
  if (typeof waitMs !== "number" || !Number.isSafeInteger(waitMs) || waitMs < 0) {
    throw new IdempotencyOptionsError("waitMs", "expected a whole number of milliseconds, 0 or more.");
  }
  return {
    scope: scope ?? "global",
    fingerprint: fingerprint === undefined ? "none" : hashParts(["run", fingerprint]),
    waitMs,
  };
}

async function runClaimed<T>(
  key: string,
  fn: (context: RunContext) => T | Promise<T>,
  execution: ClaimedExecution,
): Promise<Awaited<T>> {
  let result: Awaited<T>;
  try {
    result = await fn({ key, signal: execution.signal, notStarted: () => execution.notStarted() });
  } catch (error) {
    await execution.abandon();
    throw error;
  }
  let json: string | undefined;
  try {
    json = result === undefined ? undefined : JSON.stringify(result);
  } catch {
    json = undefined; // a BigInt or a cycle: completed without a result, like an oversized one
  }
  if (result === undefined) {
    execution.start(204, []);
  } else {
    execution.start(200, [["content-type", "application/json"]]);
    if (json === undefined) execution.omitBody();
  }
  await execution.end(json === undefined ? undefined : Buffer.from(json));
  return result;
}

function replayResult(bytes: Uint8Array | null, base: () => IdempotencyEventBase, emit: Emit): unknown {
  const stored = decodeStored(bytes, base, emit);
  if (stored === undefined) throw new IdempotencyStoreError("Store begin returned an unreadable record.");
  if (stored === null || stored.body === null) {
    emit(() => ({ ...base(), type: "replayed", status: 410 }));
    throw new IdempotencyResultNotStoredError();
  }
  emit(() => ({ ...base(), type: "replayed", status: stored.status }));
  return stored.status === 204 ? undefined : JSON.parse(Buffer.from(stored.body).toString("utf8"));
}

/**
 * The execution that claimed each framework request (`native`), shared by every engine and by both builds
 * (ESM and CommonJS) of this module through a registered symbol. It serves two rules: middleware mounted twice
 * on one request (app-wide and on a route) must not claim it again, which would answer its own 409, so later
 * engines pass it through; and a binding's `notStarted(<framework request>)` finds the claim here.
 */
const registry = globalThis as { [CLAIMS]?: WeakMap<object, Execution> };
const claims = registry[CLAIMS] ?? new WeakMap<object, Execution>();
registry[CLAIMS] = claims;

function isObject(native: unknown): native is object {
  return (typeof native === "object" || typeof native === "function") && native !== null;
}

/**
 * Declares that the handler of a claimed framework request did nothing yet (validation or authorisation
 * failed before any side effect): its claim is released and nothing is stored, whatever the status. `native`
 * is the framework's own request object the binding passed as `IdempotencyRequest.native` (Express `req`,
 * Hono `c`, Koa `ctx`). Does nothing for a request no engine claimed. Bindings export it as `notStarted`.
 *
 * @example
 * ```ts
 * import { declareNotStarted } from "@idempotency/core";
 *
 * export function notStarted(ctx: Context): void {
 *   declareNotStarted(ctx);
 * }
 * ```
 */
export function declareNotStarted(native: unknown): void {
  if (isObject(native)) claims.get(native)?.notStarted();
}

/**
 * The signal of the claim an engine holds for a framework request (`native`, as for
 * {@link declareNotStarted}), or `undefined` when no engine claimed it. It aborts when the handler should stop
 * early: the lease was lost to another request, or the handler ran past `maxExecutionMs`. Bindings export it
 * as `idempotencySignal`.
 *
 * @example
 * ```ts
 * import { executionSignal } from "@idempotency/core";
 *
 * export function idempotencySignal(ctx: Context): AbortSignal | undefined {
 *   return executionSignal(ctx);
 * }
 * ```
 */
export function executionSignal(native: unknown): AbortSignal | undefined {
  return isObject(native) ? claims.get(native)?.signal : undefined;
}

/** The decoded record, `null` when it was completed without a response, `undefined` when unreadable. */
function decodeStored(
  bytes: Uint8Array | null,
  base: () => IdempotencyEventBase,
  emit: Emit,
): StoredResponse | null | undefined {
  try {
    return bytes === null ? null : decodeResponse(bytes);
  } catch (error) {
    emit(() => storeErrorEvent(base(), "begin", error));
    return undefined;
  }
}

function replay(
  bytes: Uint8Array | null,
  base: () => IdempotencyEventBase,
  emit: Emit,
  refuse: (problem: IdempotencyProblem) => Decision,
): Decision {
  const stored = decodeStored(bytes, base, emit);
  if (stored === undefined) return refuse(problems.storeUnavailable());
  if (stored === null || stored.body === null) {
    const location =
      stored?.headers.filter(([name]) => name === "location" || name === "content-location") ?? [];
    emit(() => ({ ...base(), type: "replayed", status: 410 }));
    return refuse(problems.responseNotStored(location));
  }
  emit(() => ({ ...base(), type: "replayed", status: stored.status }));
  const headers: Array<[string, string]> = [...stored.headers, ["idempotent-replayed", "true"]];
  // RFC 9110 §8.6: no Content-Length on 1xx and 204; a 304 has none of its own body to describe.
  if (!BODYLESS_STATUS(stored.status)) headers.push(["content-length", String(stored.body.length)]);
  return {
    action: "respond",
    response: { status: stored.status, headers, body: stored.body },
    replayed: true,
  };
}

/** A `store-error` event for a failed store call, its error wrapped as an `IdempotencyStoreError`. */
function storeErrorEvent(
  base: IdempotencyEventBase,
  operation: "begin" | "complete" | "extend" | "release",
  error: unknown,
): IdempotencyEvent {
  return { ...base, type: "store-error", operation, error: toStoreError(operation, error) };
}

/**
 * The store as the engine calls it: every call bounded by `storeTimeoutMs`, which the store also receives
 * (its last argument) so that one that enforces deadlines where it applies the call uses the same one, and
 * every failure (a rejection, a synchronous throw, a timeout) an `IdempotencyStoreError`. A call that times
 * out counts as failed; a store that cannot refuse to apply it late leaves a lease that expires on its own.
 */
function guardStore(store: IdempotencyStore, timeoutMs: number): IdempotencyStore {
  const call: StoreCallOptions = Object.freeze({ timeoutMs });
  function guard<R>(operation: string, run: () => Promise<R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new IdempotencyStoreError(
            `Store ${operation} did not answer within ${timeoutMs} ms (storeTimeoutMs); treated as failed.`,
          ),
        );
      }, timeoutMs);
      const settle = (fn: () => void) => {
        clearTimeout(timer);
        fn();
      };
      try {
        run().then(
          (value) => settle(() => resolve(value)),
          (error: unknown) => settle(() => reject(toStoreError(operation, error))),
        );
      } catch (error) {
        settle(() => reject(toStoreError(operation, error)));
      }
    });
  }
  return {
    begin: (key, args) => guard("begin", () => store.begin(key, args, call)),
    complete: (key, token, response, ttlMs) =>
      guard("complete", () => store.complete(key, token, response, ttlMs, call)),
    extend: (key, token, leaseMs) => guard("extend", () => store.extend(key, token, leaseMs, call)),
    release: (key, token) => guard("release", () => store.release(key, token, call)),
    get: (key) => guard("get", () => store.get(key, call)),
    delete: (key) => guard("delete", () => store.delete(key, call)),
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One claimed request: renews its lease, captures the response, then completes or releases the record. */
class ClaimedExecution implements Execution {
  readonly #options: ResolvedOptions;
  readonly #store: IdempotencyStore;
  readonly #key: string;
  readonly #token: string;
  readonly #base: () => IdempotencyEventBase;
  readonly #emit: Emit;
  #status: number | null = null;
  #headers: Array<[string, string]> = [];
  #contentLength: number | undefined;
  #chunks: Uint8Array[] = [];
  #captured = 0;
  /** The body is not kept: larger than `maxResponseBytes`, or not serialisable (function API). */
  #bodyOmitted = false;
  #held: Uint8Array = EMPTY;
  /** Some bytes were handed back to be sent: the head is on its way to the client and can no longer change. */
  #sent = false;
  #notStarted = false;
  #leaseLost = false;
  #finished = false;
  #renewal: ReturnType<typeof setInterval> | undefined;
  #renewing = false;
  /** When the handler started, on the engine's clock: `maxExecutionMs` counts from here. */
  readonly #startedAt: number;
  #abort: AbortController | undefined;
  /** Why the signal is (or will be, once someone asks for it) aborted. */
  #abortReason: IdempotencyAbortError | undefined;

  constructor(
    options: ResolvedOptions,
    store: IdempotencyStore,
    key: string,
    token: string,
    base: () => IdempotencyEventBase,
    emit: Emit,
    startedAt: number,
  ) {
    this.#options = options;
    this.#store = store;
    this.#key = key;
    this.#token = token;
    this.#base = base;
    this.#emit = emit;
    this.#startedAt = startedAt;
    this.#renewal = setInterval(() => void this.#renew(), Math.floor(options.leaseMs / 3));
    this.#renewal.unref?.();
  }

  get signal(): AbortSignal {
    this.#abort ??= new AbortController();
    if (this.#abortReason && !this.#abort.signal.aborted) this.#abort.abort(this.#abortReason);
    return this.#abort.signal;
  }

  /** Aborts the signal (now, or when it is first asked for) and stops renewing the lease. */
  #stop(reason: IdempotencyAbortError): void {
    this.#stopRenewal();
    this.#abortReason ??= reason;
    this.#abort?.abort(this.#abortReason);
  }

  start(status: number, headers: ResponseHeadersInput): void {
    if (this.#sent || this.#finished) return;
    // Nothing reached the client yet, so this head replaces the response begun so far (an error handler
    // taking over after the handler wrote part of a body): what is stored is what the client gets.
    this.#status = status;
    this.#headers = normalizeHeaders(headers);
    this.#contentLength = contentLength(this.#headers);
    this.#chunks = [];
    this.#captured = 0;
    this.#held = EMPTY;
    this.#bodyOmitted = false;
    if (this.#contentLength !== undefined && this.#contentLength > this.#options.maxResponseBytes) {
      this.omitBody();
    }
  }

  write(chunk: Uint8Array): Uint8Array {
    if (this.#finished || chunk.length === 0) return chunk;
    const before = this.#captured;
    this.#capture(chunk);
    const length = this.#contentLength;
    let forward = chunk;
    if (length !== undefined && this.#captured >= length && before < length) {
      // This chunk completes the declared body: keep its last byte until the record is completed.
      const cut = Math.max(0, length - before - 1);
      this.#held = chunk.slice(cut);
      forward = chunk.subarray(0, cut);
    }
    if (forward.length > 0) this.#sent = true;
    return forward;
  }

  async end(chunk?: Uint8Array): Promise<Uint8Array> {
    if (this.#finished) return chunk ?? EMPTY;
    if (chunk && chunk.length > 0) this.#capture(chunk);
    const rest = this.#held.length === 0 ? (chunk ?? EMPTY) : concat([this.#held, chunk ?? EMPTY]);
    await this.#finish(this.#status ?? 200);
    return rest;
  }

  /** Counts every chunk, and keeps a copy (a binding may reuse its buffer) while under the size cap. */
  #capture(chunk: Uint8Array): void {
    this.#status ??= 200;
    this.#captured += chunk.length;
    if (this.#bodyOmitted) return;
    if (this.#captured > this.#options.maxResponseBytes) this.omitBody();
    else this.#chunks.push(chunk.slice());
  }

  /** Completes the record without its body: retries get 410 (or `IdempotencyResultNotStoredError`). */
  omitBody(): void {
    this.#bodyOmitted = true;
    this.#chunks = [];
  }

  notStarted(): void {
    this.#notStarted = true;
  }

  async abandon(): Promise<void> {
    if (this.#finished) return;
    await this.#finish(null);
  }

  async #finish(status: number | null): Promise<void> {
    this.#finished = true;
    this.#stopRenewal();
    if (this.#leaseLost) return; // reported when it was found; the record belongs to someone else now
    if (this.#notStarted || status === null || !this.#options.shouldStore(status)) {
      await this.#release(status);
      return;
    }
    const body = this.#bodyOmitted ? null : concat(this.#chunks);
    const headers = storableHeaders(this.#headers, this.#options.unreplayedHeaders);
    await this.#complete(status, encodeResponse({ status, headers, body }));
  }

  async #release(status: number | null): Promise<void> {
    try {
      await this.#store.release(this.#key, this.#token);
    } catch (error) {
      // The lease expires on its own; the key is free again after at most leaseMs.
      this.#emit(() => storeErrorEvent(this.#base(), "release", error));
    }
    if (this.#notStarted) this.#emit(() => ({ ...this.#base(), type: "not-started", status }));
    else
      this.#emit(() => ({
        ...this.#base(),
        type: "released",
        status,
        reason: status === null ? "no-response" : "not-stored",
      }));
  }

  /**
   * Completes the record, retrying failed attempts. An attempt that failed may still have been applied, so
   * a later `false` is checked against the record: if it holds exactly these bytes, the completion landed.
   */
  async #complete(status: number, response: Uint8Array): Promise<void> {
    const completed = (): IdempotencyEvent => ({
      ...this.#base(),
      type: "completed",
      status,
      bodyBytes: this.#captured,
      bodyStored: !this.#bodyOmitted,
    });
    let uncertain = false;
    for (let attempt = 1; ; attempt++) {
      try {
        const done = await this.#store.complete(this.#key, this.#token, response, this.#options.ttlMs);
        if (done || (uncertain && (await this.#holds(response)))) this.#emit(completed);
        else this.#emit(() => ({ ...this.#base(), type: "lease-lost", operation: "complete" }));
        return;
      } catch (error) {
        if (attempt === COMPLETE_ATTEMPTS) {
          // The response is still delivered; the record stays in flight until its lease expires.
          this.#emit(() => storeErrorEvent(this.#base(), "complete", error));
          return;
        }
        uncertain = true;
        await delay(COMPLETE_RETRY_DELAY_MS * attempt);
      }
    }
  }

  /** Whether the record is completed with exactly `response`, i.e. an earlier attempt was applied. */
  async #holds(response: Uint8Array): Promise<boolean> {
    try {
      const record = await this.#store.get(this.#key);
      return (
        record?.state === "completed" && record.response !== null && equalBytes(record.response, response)
      );
    } catch {
      return false;
    }
  }

  async #renew(): Promise<void> {
    if (this.#renewing || this.#finished) return;
    const { maxExecutionMs } = this.#options;
    if (this.#options.now() - this.#startedAt >= maxExecutionMs) {
      // A handler this slow is presumed hung: let its lease run out so the key cannot be held forever.
      this.#stop(
        new IdempotencyAbortError(
          "ERR_IDEMPOTENCY_EXECUTION_LIMIT",
          `The handler ran past maxExecutionMs (${maxExecutionMs} ms); its lease is no longer renewed.`,
        ),
      );
      this.#emit(() => ({ ...this.#base(), type: "execution-limit", maxExecutionMs }));
      return;
    }
    this.#renewing = true;
    try {
      const renewed = await this.#store.extend(this.#key, this.#token, this.#options.leaseMs);
      if (!renewed && !this.#finished) {
        this.#leaseLost = true;
        this.#stop(
          new IdempotencyAbortError(
            "ERR_IDEMPOTENCY_LEASE_LOST",
            "Another request took this key over; this execution's result will not be stored.",
          ),
        );
        this.#emit(() => ({ ...this.#base(), type: "lease-lost", operation: "extend" }));
      }
    } catch (error) {
      // Keep trying on the next tick: the lease is only lost once another request takes the key over.
      this.#emit(() => storeErrorEvent(this.#base(), "extend", error));
    } finally {
      this.#renewing = false;
    }
  }

  #stopRenewal(): void {
    if (this.#renewal !== undefined) clearInterval(this.#renewal);
    this.#renewal = undefined;
  }
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  return Buffer.concat(chunks);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
