import { encodeResponse } from "./encoding.js";
import { IdempotencyAbortError } from "./errors.js";
import { type Emit, type IdempotencyEvent, type IdempotencyEventBase, storeErrorEvent } from "./events.js";
import { contentLength, normalizeHeaders, type ResponseHeadersInput, storableHeaders } from "./headers.js";
import type { ResolvedOptions } from "./options.js";
import type { PreparedResponse } from "./problems.js";
import type { IdempotencyStore } from "./store.js";
import { delay } from "./timers.js";

const EMPTY = new Uint8Array(0);
/** `complete` is tried this many times before the engine gives up and lets the lease expire. */
const COMPLETE_ATTEMPTS = 3;
const COMPLETE_RETRY_DELAY_MS = 100;

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
   * The client left before the whole request body arrived. An error status answered to such a request (a
   * body parser's 400 "request aborted", a 499, a 500) is about the broken upload, not an outcome: it is
   * released (a `released` event with reason `request-aborted`) so that the retry with the whole body runs,
   * instead of replaying the error for the record's TTL. A success (below 400) is stored as usual: the
   * handler did its work without needing the rest of the body.
   */
  requestAborted?(): void;
  /**
   * Aborted when the handler should stop early: its lease was lost to another request, or it ran past
   * `maxExecutionMs`. `reason` is an `IdempotencyAbortError` saying which. Bindings hand it to handlers
   * (`idempotencySignal`).
   */
  readonly signal: AbortSignal;
  /**
   * Read once `end()` has resolved: when set, the binding sends this response (status, headers and body)
   * instead of the captured one, whose head it discards. Only an execution that held the whole response
   * back sets it (the `transactional` mode, when the commit failed), so no byte of the replaced response
   * has reached the client.
   */
  readonly replacement?: PreparedResponse | undefined;
  /**
   * `true` when `write` never lets bytes through and the whole response goes out after `end()` (the
   * `transactional` mode: nothing may reach the client before the commit). A binding that would otherwise
   * send the head before the body ends (a streamed `Response`) reads the body to its end first.
   */
  readonly holdsResponse?: boolean;
}

/**
 * Why a final response is not stored, or `undefined` when it is: the one rule of both kinds of execution.
 * `notStarted` and "no response" are decided by the caller before.
 */
export function notStoredReason(
  status: number,
  shouldStore: (status: number) => boolean,
  requestAborted: boolean,
): "request-aborted" | "not-stored" | undefined {
  if (requestAborted && status >= 400) return "request-aborted";
  return shouldStore(status) ? undefined : "not-stored";
}

/** One claimed request: renews its lease, captures the response, then completes or releases the record. */
export class ClaimedExecution implements Execution {
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
  #requestAborted = false;
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
    else this.#chunks.push(copyOf(chunk));
  }

  /** Completes the record without its body: retries get 410 (or `IdempotencyResultNotStoredError`). */
  omitBody(): void {
    this.#bodyOmitted = true;
    this.#chunks = [];
  }

  notStarted(): void {
    this.#notStarted = true;
  }

  requestAborted(): void {
    this.#requestAborted = true;
  }

  async abandon(): Promise<void> {
    if (this.#finished) return;
    await this.#finish(null);
  }

  async #finish(status: number | null): Promise<void> {
    this.#finished = true;
    this.#stopRenewal();
    if (this.#leaseLost) return; // reported when it was found; the record belongs to someone else now
    if (this.#notStarted || status === null) {
      await this.#release(status, "no-response");
      return;
    }
    const reason = notStoredReason(status, this.#options.shouldStore, this.#requestAborted);
    if (reason !== undefined) {
      await this.#release(status, reason);
      return;
    }
    const body = this.#bodyOmitted ? null : concat(this.#chunks);
    const headers = storableHeaders(this.#headers, this.#options.unreplayedHeaders);
    await this.#complete(status, encodeResponse({ status, headers, body }));
  }

  async #release(
    status: number | null,
    reason: "no-response" | "not-stored" | "request-aborted",
  ): Promise<void> {
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
        reason,
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

/**
 * A copy of `chunk` from Node's shared pool. `Buffer#slice` is a view (unlike `Uint8Array#slice`), so copying
 * with it kept the writer's own Buffer: reusing it after `write` changed the stored body. (Node may still hold
 * the same Buffer to send it, so changing a written buffer remains unsupported; the record keeps the bytes as
 * they were when written.)
 */
function copyOf(chunk: Uint8Array): Uint8Array {
  const copy = Buffer.allocUnsafe(chunk.length);
  copy.set(chunk);
  return copy;
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  return Buffer.concat(chunks);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
