import { randomUUID } from "node:crypto";
import { decodeResponse, encodeResponse, type StoredResponse } from "./encoding.js";
import { IdempotencyError, toStoreError } from "./errors.js";
import type { IdempotencyEvent, IdempotencyEventBase } from "./events.js";
import { createFingerprinter } from "./fingerprint.js";
import { contentLength, normalizeHeaders, type ResponseHeadersInput, storableHeaders } from "./headers.js";
import { identityKey } from "./identity.js";
import { parseIdempotencyKey } from "./key.js";
import { type IdempotencyOptions, type ResolvedOptions, resolveOptions } from "./options.js";
import { type PreparedResponse, problems } from "./problems.js";
import type { IdempotencyRequest } from "./request.js";
import type { BeginResult } from "./store.js";

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
 * Headers must reach the client no earlier than the first forwarded bytes (or the end). `notStarted`,
 * `closed` and `abandon` may come at any point.
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
  /** The response head. Calling it again before the first `write` replaces it. */
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
  /** The client connection closed: stop renewing the lease. A response produced later is still stored. */
  closed(): void;
  /** The handler finished without producing any response: release the claim so a retry runs again. */
  abandon(): Promise<void>;
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
}

const PASS: Decision = { action: "pass" };
const EMPTY = new Uint8Array(0);

/**
 * Creates the framework-free idempotency engine. Bindings (`@idempotency/express`, `/hono`, `/koa`) wrap it;
 * use it directly to write a binding of your own.
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
  const { store, now, leaseMs, ttlMs } = resolved;
  const fingerprintOf = createFingerprinter(resolved.fingerprint);
  const headerName = resolved.header;

  function emit(event: IdempotencyEvent): void {
    if (!resolved.onEvent) return;
    try {
      resolved.onEvent(event);
    } catch {
      // A failing logger must never change how a request is answered.
    }
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

  async function handle(request: IdempotencyRequest): Promise<Decision> {
    const startedAt = now();
    if (!resolved.methods.has(request.method)) return PASS;
    const value = request.headers.get(headerName);
    if (value === null) {
      return resolved.required ? respond(problems.missingKey(headerName)) : PASS;
    }
    const parsed = parseIdempotencyKey(value, resolved.maxKeyLength);
    if (!parsed.ok) return respond(problems.invalidKey(headerName, parsed.reason));

    const [scope, fingerprint] = await Promise.all([scopeOf(request), fingerprintOf(request)]);
    const key = identityKey(scope, request.method, request.path, parsed.key);
    const base = (): IdempotencyEventBase => {
      const at = now();
      return { key, method: request.method, path: request.path, at, elapsedMs: at - startedAt };
    };
    const token = randomUUID();

    let result: BeginResult;
    try {
      result = await store.begin(key, {
        token,
        fingerprint,
        leaseMs,
        ttlMs,
        allowTakeover: resolved.onLeaseExpired === "run-again",
      });
    } catch (error) {
      emit(storeErrorEvent(base(), "begin", error));
      return respond(problems.storeUnavailable());
    }

    if (result.state === "claimed") {
      emit({ ...base(), type: "claimed", takeover: result.takeover });
      return { action: "execute", execution: new ClaimedExecution(resolved, key, token, base, emit) };
    }
    if (result.fingerprint !== fingerprint) {
      emit({ ...base(), type: "key-reused" });
      return respond(problems.keyReused(headerName));
    }
    if (result.state === "in-flight") {
      emit({ ...base(), type: "in-progress", leaseRemainingMs: result.leaseRemainingMs });
      return respond(problems.inProgress(headerName, result.leaseRemainingMs));
    }
    return replay(result.response, base, emit);
  }

  return { options: resolved, handle };
}

function respond(response: PreparedResponse): Decision {
  return { action: "respond", response, replayed: false };
}

function replay(
  bytes: Uint8Array | null,
  base: () => IdempotencyEventBase,
  emit: (event: IdempotencyEvent) => void,
): Decision {
  let stored: StoredResponse | null;
  try {
    stored = bytes === null ? null : decodeResponse(bytes);
  } catch (error) {
    emit(storeErrorEvent(base(), "begin", error));
    return respond(problems.storeUnavailable());
  }
  if (stored === null || stored.body === null) {
    const location =
      stored?.headers.filter(([name]) => name === "location" || name === "content-location") ?? [];
    emit({ ...base(), type: "replayed", status: 410 });
    return respond(problems.responseNotStored(location));
  }
  emit({ ...base(), type: "replayed", status: stored.status });
  const headers: Array<[string, string]> = [
    ...stored.headers,
    ["idempotent-replayed", "true"],
    ["content-length", String(stored.body.length)],
  ];
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

/** One claimed request: renews its lease, captures the response, then completes or releases the record. */
class ClaimedExecution implements Execution {
  readonly #options: ResolvedOptions;
  readonly #key: string;
  readonly #token: string;
  readonly #base: () => IdempotencyEventBase;
  readonly #emit: (event: IdempotencyEvent) => void;
  #status: number | null = null;
  #headers: Array<[string, string]> = [];
  #contentLength: number | undefined;
  readonly #chunks: Uint8Array[] = [];
  #captured = 0;
  #held: Uint8Array = EMPTY;
  #notStarted = false;
  #leaseLost = false;
  #finished = false;
  #renewal: ReturnType<typeof setInterval> | undefined;
  #renewing = false;

  constructor(
    options: ResolvedOptions,
    key: string,
    token: string,
    base: () => IdempotencyEventBase,
    emit: (event: IdempotencyEvent) => void,
  ) {
    this.#options = options;
    this.#key = key;
    this.#token = token;
    this.#base = base;
    this.#emit = emit;
    this.#renewal = setInterval(() => void this.#renew(), Math.floor(options.leaseMs / 3));
    this.#renewal.unref?.();
  }

  start(status: number, headers: ResponseHeadersInput): void {
    if (this.#captured > 0 || this.#finished) return;
    this.#status = status;
    this.#headers = normalizeHeaders(headers);
    this.#contentLength = contentLength(this.#headers);
  }

  write(chunk: Uint8Array): Uint8Array {
    if (this.#finished || chunk.length === 0) return chunk;
    const before = this.#captured;
    this.#capture(chunk);
    const length = this.#contentLength;
    if (length === undefined || this.#captured < length || before >= length) return chunk;
    // This chunk completes the declared body: keep its last byte until the record is completed.
    const forward = Math.max(0, length - before - 1);
    this.#held = chunk.slice(forward);
    return chunk.subarray(0, forward);
  }

  async end(chunk?: Uint8Array): Promise<Uint8Array> {
    if (this.#finished) return chunk ?? EMPTY;
    if (chunk && chunk.length > 0) this.#capture(chunk);
    const rest = this.#held.length === 0 ? (chunk ?? EMPTY) : concat([this.#held, chunk ?? EMPTY]);
    await this.#finish(this.#status ?? 200);
    return rest;
  }

  /** Keeps a copy: a binding may reuse its buffer once the chunk is sent. */
  #capture(chunk: Uint8Array): void {
    this.#status ??= 200;
    this.#chunks.push(chunk.slice());
    this.#captured += chunk.length;
  }

  notStarted(): void {
    this.#notStarted = true;
  }

  closed(): void {
    this.#stopRenewal();
  }

  async abandon(): Promise<void> {
    if (this.#finished) return;
    await this.#finish(null);
  }

  async #finish(status: number | null): Promise<void> {
    this.#finished = true;
    this.#stopRenewal();
    if (this.#leaseLost) return; // reported when it was found; the record belongs to someone else now
    const { store, shouldStore, ttlMs } = this.#options;
    if (this.#notStarted || status === null || !shouldStore(status)) {
      try {
        await store.release(this.#key, this.#token);
      } catch (error) {
        // The lease expires on its own; the key is free again after at most leaseMs.
        this.#emit(storeErrorEvent(this.#base(), "release", error));
      }
      if (this.#notStarted) this.#emit({ ...this.#base(), type: "not-started", status });
      else
        this.#emit({
          ...this.#base(),
          type: "released",
          status,
          reason: status === null ? "no-response" : "not-stored",
        });
      return;
    }
    const body = concat(this.#chunks);
    const response = encodeResponse({ status, headers: storableHeaders(this.#headers), body });
    try {
      if (await store.complete(this.#key, this.#token, response, ttlMs)) {
        this.#emit({ ...this.#base(), type: "completed", status, bodyBytes: body.length });
      } else {
        this.#emit({ ...this.#base(), type: "lease-lost", operation: "complete" });
      }
    } catch (error) {
      this.#emit(storeErrorEvent(this.#base(), "complete", error));
    }
  }

  async #renew(): Promise<void> {
    if (this.#renewing || this.#finished) return;
    this.#renewing = true;
    try {
      const renewed = await this.#options.store.extend(this.#key, this.#token, this.#options.leaseMs);
      if (!renewed && !this.#finished) {
        this.#leaseLost = true;
        this.#stopRenewal();
        this.#emit({ ...this.#base(), type: "lease-lost", operation: "extend" });
      }
    } catch (error) {
      // Keep trying on the next tick: the lease is only lost once another request takes the key over.
      this.#emit(storeErrorEvent(this.#base(), "extend", error));
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
