import { randomUUID } from "node:crypto";
import { claims, isObject } from "./claims.js";
import {
  IdempotencyError,
  IdempotencyInProgressError,
  IdempotencyKeyLockedError,
  IdempotencyKeyReusedError,
  IdempotencyRequestAbortedError,
  IdempotencyRequestTooLargeError,
  type IdempotencyStoreError,
  toStoreError,
} from "./errors.js";
import { type IdempotencyEvent, type IdempotencyEventBase, storeErrorEvent } from "./events.js";
import { ClaimedExecution, type Execution } from "./execution.js";
import { createFingerprinter, withBoundedBody } from "./fingerprint.js";
import { type ForgetTarget, forgottenIdentity } from "./forget.js";
import { guardStore } from "./guarded-store.js";
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
import { replay } from "./replay.js";
import type { IdempotencyRequest } from "./request.js";
import {
  RUN_METHOD,
  RUN_PATH,
  type RunContext,
  type RunOptions,
  replayResult,
  resolveRunCall,
  runClaimed,
} from "./run.js";
import type {
  BeginResult,
  IdempotencyStore,
  TransactionalStore,
  TransactionOf,
  TransactionOutcome,
} from "./store.js";
import { delay } from "./timers.js";
import { runTransaction, type TransactionContext, transactionalStoreOf } from "./transaction.js";
import { ROLLBACK, TransactionalExecution } from "./transactional-execution.js";

const PASS: Decision = { action: "pass" };
const TOO_LARGE = new IdempotencyRequestTooLargeError(0).code;
const ABORTED = new IdempotencyRequestAbortedError().code;
/** Waiting duplicates poll the store after 25 ms, then back off by doubling up to 1 s between polls. */
const WAIT_FIRST_POLL_MS = 25;
const WAIT_MAX_POLL_MS = 1_000;

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
 * An idempotency engine, created by {@link createIdempotency}. Framework bindings call `handle`; the
 * options it was created with are available as `options`.
 *
 * @example
 * ```ts
 * const idempotency: Idempotency = createIdempotency({ store, scope: "global" });
 * idempotency.options.leaseMs; // 30000
 * ```
 */
export interface Idempotency<S extends IdempotencyStore = IdempotencyStore> {
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
  /**
   * Like `run`, but `fn` writes through `tx`, a transaction of the store's own database that also holds
   * the claim and the completed record: the effect and the record commit together, or neither does. A crash
   * at any point before the commit leaves no effect and no record, so a retry runs once, cleanly; after it,
   * a retry gets the stored result. Needs a store with transactions: `PostgresStore` (`tx` is a
   * node-postgres `PoolClient`; `fn` may be async) or `SqliteStore` (`tx` is the better-sqlite3 `Database`;
   * `fn` must be synchronous). A concurrent duplicate waits for the first transaction up to `waitMs`, then
   * throws `IdempotencyInProgressError`; a different `fingerprint` throws `IdempotencyKeyReusedError`; a throw
   * from `fn` rolls back its writes and the claim and is rethrown. Never `COMMIT` or `ROLLBACK` inside `fn`
   * (use savepoints). Effects outside the database (an e-mail, a payment API) are not covered: write them to
   * an outbox table in `fn`, and send them from a consumer that uses `run()`.
   *
   * @example
   * ```ts
   * const idempotency = createIdempotency({ store: new PostgresStore({ pool }), scope: "global" });
   *
   * const receipt = await idempotency.transaction(request.key, async (tx) => {
   *   const { rows } = await tx.query("INSERT INTO orders (total) VALUES ($1) RETURNING id", [order.total]);
   *   await tx.query("INSERT INTO outbox (topic, payload) VALUES ('order-created', $1)", [rows[0].id]);
   *   return { orderId: rows[0].id };
   * }, { scope: tenantId, fingerprint: JSON.stringify(order) });
   * ```
   */
  transaction<T>(
    key: string,
    fn: (tx: TransactionOf<S>, context: TransactionContext) => T | Promise<T>,
    options?: RunOptions,
  ): Promise<Awaited<T>>;
}

/** How a key's record stands after `begin` (and any waiting), as the engine sees it. */
type Outcome<E extends Execution = Execution> =
  | { state: "claimed"; execution: E }
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
 * type AuthenticatedRequest = { user: { id: string; tenantId: string } }; // your framework's, after auth
 *
 * const idempotency = createIdempotency({
 *   store: new MemoryStore(),
 *   // the tenant your authentication verified; a client-chosen header would expose other tenants' replays
 *   scope: (request) => (request.native as AuthenticatedRequest).user.tenantId,
 * });
 *
 * const decision = await idempotency.handle(request);
 * if (decision.action === "respond") send(decision.response);
 * ```
 */
export function createIdempotency<S extends IdempotencyStore = IdempotencyStore>(
  options: IdempotencyOptions & { store: S },
): Idempotency<S> {
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
  ): Promise<Outcome<ClaimedExecution>> {
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

  /**
   * The `transactional` mode's claim: opens a store transaction and, when it claims the key, answers with an
   * execution that holds it open until the handler's response ends (then commits or rolls back). When the
   * transaction claims nothing it has already ended, and the answer is what it found.
   */
  function beginTransaction(
    key: string,
    fingerprint: string,
    base: () => IdempotencyEventBase,
    request: IdempotencyRequest,
  ): Promise<Outcome> {
    const transactional = resolved.store as TransactionalStore<unknown>;
    return new Promise<Outcome>((resolve) => {
      let execution: TransactionalExecution | undefined;
      const args = {
        token: randomUUID(),
        fingerprint,
        leaseMs,
        ttlMs,
        allowTakeover: resolved.onLeaseExpired === "run-again",
        waitMs: resolved.waitMs,
        timeoutMs: resolved.storeTimeoutMs,
      };
      let ended: Promise<TransactionOutcome>;
      try {
        ended = transactional.transaction(key, args, (tx) => {
          execution = new TransactionalExecution(tx, resolved, base, emit, () =>
            present(problems.storeUnavailable(), request),
          );
          resolve({ state: "claimed", execution });
          return execution.work;
        });
      } catch (error) {
        ended = Promise.reject(error);
      }
      ended.then(
        (outcome) => {
          if (execution) return execution.committed(outcome.state === "committed" && outcome.takeover);
          switch (outcome.state) {
            case "locked":
              emit(() => ({
                ...base(),
                type: "in-progress",
                leaseRemainingMs: leaseMs,
                waitedMs: resolved.waitMs,
              }));
              return resolve({ state: "in-flight", leaseRemainingMs: leaseMs });
            case "committed":
              return; // unreachable: a commit ran the work, which created the execution
            default:
              if (outcome.fingerprint !== fingerprint) {
                emit(() => ({ ...base(), type: "key-reused" }));
                return resolve({ state: "key-reused" });
              }
              if (outcome.state === "completed")
                return resolve({ state: "completed", response: outcome.response });
              emit(() => ({
                ...base(),
                type: "in-progress",
                leaseRemainingMs: outcome.leaseRemainingMs,
                waitedMs: 0,
              }));
              return resolve({ state: "in-flight", leaseRemainingMs: outcome.leaseRemainingMs });
          }
        },
        (error: unknown) => {
          if (execution) {
            if (error !== ROLLBACK) {
              emit(() => storeErrorEvent(base(), "transaction", error));
            }
            return execution.failed(error);
          }
          const storeError = toStoreError("transaction", error);
          emit(() =>
            resolved.failOpen
              ? { ...base(), type: "fail-open", error: storeError }
              : { ...base(), type: "store-error", operation: "transaction", error: storeError },
          );
          resolve({ state: "unavailable", error: storeError });
        },
      );
    });
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
      const code = (error as { code?: unknown } | null)?.code;
      if (code === TOO_LARGE)
        return refuse(problems.requestTooLarge(headerName, resolved.maxRequestBytes), request);
      if (code === ABORTED) return refuse(problems.requestAborted(), request);
      throw error;
    }
    const key = identityKey(scope, request.method, request.path, parsed.key);
    const base = eventBase(key, request.method, request.path, startedAt);
    const outcome = resolved.transactional
      ? await beginTransaction(key, fingerprint, base, request)
      : await begin(key, fingerprint, base, resolved.waitMs);
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

  async function transaction<T>(
    key: string,
    fn: (tx: TransactionOf<S>, context: TransactionContext) => T | Promise<T>,
    callOptions: RunOptions = {},
  ): Promise<Awaited<T>> {
    const startedAt = now();
    const call = resolveRunCall(key, fn, callOptions, resolved, "transaction()");
    const transactional = transactionalStoreOf(resolved, fn);
    // The same identities as run(): a key is one operation whichever of the two protects it.
    const identity = identityKey(call.scope, RUN_METHOD, RUN_PATH, key);
    const base = eventBase(identity, RUN_METHOD, RUN_PATH, startedAt);
    return runTransaction(
      transactional,
      fn as (tx: unknown, context: TransactionContext) => T | Promise<T>,
      { identity, key, fingerprint: call.fingerprint, waitMs: call.waitMs, base },
      resolved,
      emit,
    );
  }

  return { options: resolved, handle, run, forget, transaction };
}
