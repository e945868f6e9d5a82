import { encodeResponse } from "./encoding.js";
import { IdempotencyAbortError } from "./errors.js";
import type { Emit, IdempotencyEventBase } from "./events.js";
import { type Execution, notStoredReason } from "./execution.js";
import { normalizeHeaders, type ResponseHeadersInput, storableHeaders } from "./headers.js";
import type { ResolvedOptions } from "./options.js";
import type { PreparedResponse } from "./problems.js";

const EMPTY = new Uint8Array(0);

/** What the work of a transaction rejects with to roll it back: the response is not to be stored. */
export const ROLLBACK: unique symbol = Symbol("@idempotency/core:rollback");

/**
 * One request claimed inside a store transaction (the engine's `transactional` mode). The handler writes its
 * effects through `tx`; its response is held whole (nothing reaches the client before `COMMIT`), then:
 * - a response the engine stores (`shouldStore`, no `notStarted`) is encoded into the record and the
 *   transaction commits; the client gets the response once the commit succeeded, and a 503 instead when it
 *   failed (then neither the effect nor the record exists, and the client must not believe otherwise);
 * - any other response (a 5xx, `notStarted`, no response at all) rolls the transaction back, effects
 *   included, and the client gets the response as it is.
 *
 * There is no lease to renew: nobody sees the claim before it commits, and a concurrent duplicate waits on
 * the transaction's lock. A handler still running at `maxExecutionMs` is presumed hung: the transaction is
 * rolled back (its row lock must not be held for ever), its signal aborts, and whatever it answers later is
 * replaced by a 503, since its effects are gone.
 */
export class TransactionalExecution implements Execution {
  readonly tx: unknown;
  readonly holdsResponse = true;
  readonly #options: ResolvedOptions;
  readonly #base: () => IdempotencyEventBase;
  readonly #emit: Emit;
  readonly #unavailable: () => PreparedResponse;
  #status: number | null = null;
  #headers: Array<[string, string]> = [];
  #chunks: Uint8Array[] = [];
  #captured = 0;
  #notStarted = false;
  #requestAborted = false;
  #notStoredReason: "request-aborted" | "not-stored" | undefined;
  #finished = false;
  #replacement: PreparedResponse | undefined;
  readonly #abort = new AbortController();
  #limit: ReturnType<typeof setTimeout> | undefined;
  /** `maxExecutionMs` passed: the transaction was rolled back under the running handler. */
  #limitHit = false;
  /** Settles the store's work: the encoded record to commit, or a rejection with {@link ROLLBACK}. */
  #settleWork!: { resolve(response: Uint8Array | null): void; reject(reason: unknown): void };
  /** The work the store runs inside its transaction: resolves when the handler's response is complete. */
  readonly work: Promise<Uint8Array | null>;
  /** Resolves once the store transaction ended (committed, rolled back, or failed). */
  #settleOutcome!: () => void;
  readonly #outcome: Promise<void>;

  constructor(
    tx: unknown,
    options: ResolvedOptions,
    base: () => IdempotencyEventBase,
    emit: Emit,
    unavailable: () => PreparedResponse,
  ) {
    this.tx = tx;
    this.#options = options;
    this.#base = base;
    this.#emit = emit;
    this.#unavailable = unavailable;
    this.work = new Promise((resolve, reject) => {
      this.#settleWork = { resolve, reject };
    });
    this.#outcome = new Promise((resolve) => {
      this.#settleOutcome = resolve;
    });
    const { maxExecutionMs } = options;
    if (Number.isFinite(maxExecutionMs)) {
      this.#limit = setTimeout(() => this.#stop(), maxExecutionMs);
      this.#limit.unref?.();
    }
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  #stop(): void {
    if (this.#finished) return;
    const { maxExecutionMs } = this.#options;
    this.#limitHit = true;
    this.#emit(() => ({ ...this.#base(), type: "execution-limit", maxExecutionMs }));
    this.#abort.abort(
      new IdempotencyAbortError(
        "ERR_IDEMPOTENCY_EXECUTION_LIMIT",
        `The handler ran past maxExecutionMs (${maxExecutionMs} ms); its transaction was rolled back.`,
      ),
    );
    this.#settleWork.reject(ROLLBACK);
  }

  /** After `end()` resolved: the response to send instead of the captured one (the commit failed). */
  get replacement(): PreparedResponse | undefined {
    return this.#replacement;
  }

  start(status: number, headers: ResponseHeadersInput): void {
    if (this.#finished) return;
    // Nothing is sent before the commit, so a new head always replaces the response begun so far.
    this.#status = status;
    this.#headers = normalizeHeaders(headers);
    this.#chunks = [];
    this.#captured = 0;
  }

  write(chunk: Uint8Array): Uint8Array {
    if (!this.#finished && chunk.length > 0) this.#capture(chunk);
    return EMPTY;
  }

  async end(chunk?: Uint8Array): Promise<Uint8Array> {
    if (this.#finished) return chunk ?? EMPTY;
    if (chunk && chunk.length > 0) this.#capture(chunk);
    this.#finished = true;
    clearTimeout(this.#limit);
    const status = this.#status ?? 200;
    const body = this.#chunks.length === 1 ? (this.#chunks[0] as Uint8Array) : Buffer.concat(this.#chunks);
    this.#notStoredReason = this.#notStarted
      ? undefined
      : notStoredReason(status, this.#options.shouldStore, this.#requestAborted);
    if (this.#notStarted || this.#notStoredReason !== undefined) {
      this.#settleWork.reject(ROLLBACK);
    } else {
      const stored = this.#captured <= this.#options.maxResponseBytes ? body : null;
      const headers = storableHeaders(this.#headers, this.#options.unreplayedHeaders);
      this.#settleWork.resolve(encodeResponse({ status, headers, body: stored }));
    }
    await this.#outcome;
    return this.#replacement ? this.#replacement.body : body;
  }

  notStarted(): void {
    this.#notStarted = true;
  }

  requestAborted(): void {
    this.#requestAborted = true;
  }

  async abandon(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#limit);
    this.#settleWork.reject(ROLLBACK);
    await this.#outcome;
  }

  /** The store committed the transaction with this execution's record. */
  committed(takeover: boolean): void {
    const status = this.#status ?? 200;
    this.#emit(() => ({ ...this.#base(), type: "claimed", takeover }));
    this.#emit(() => ({
      ...this.#base(),
      type: "completed",
      status,
      bodyBytes: this.#captured,
      bodyStored: this.#captured <= this.#options.maxResponseBytes,
    }));
    this.#settleOutcome();
  }

  /**
   * The transaction did not commit: rolled back on purpose ({@link ROLLBACK}), or failed. A response that
   * was to be stored is then replaced by a 503: its effects are gone.
   */
  failed(error: unknown): void {
    if (this.#limitHit) {
      this.#replacement = this.#unavailable();
    } else if (error === ROLLBACK) {
      const status = this.#finished && this.#status !== null ? this.#status : null;
      if (this.#notStarted) this.#emit(() => ({ ...this.#base(), type: "not-started", status }));
      else
        this.#emit(() => ({
          ...this.#base(),
          type: "released",
          status,
          reason: status === null ? "no-response" : (this.#notStoredReason ?? "not-stored"),
        }));
    } else {
      this.#replacement = this.#unavailable();
    }
    this.#settleOutcome();
  }

  #capture(chunk: Uint8Array): void {
    this.#status ??= 200;
    this.#captured += chunk.length;
    this.#chunks.push(new Uint8Array(chunk)); // a copy: a binding may reuse its buffer
  }
}
