import type { StoredResponse } from "./encoding.js";
import {
  IdempotencyInvalidKeyError,
  IdempotencyOptionsError,
  IdempotencyResultNotStoredError,
  IdempotencyStoreError,
} from "./errors.js";
import type { Emit, IdempotencyEventBase } from "./events.js";
import type { ClaimedExecution } from "./execution.js";
import { hashParts } from "./fingerprint.js";
import { checkOptionNames, type ResolvedOptions, wholeNumberOption } from "./options.js";
import { decodeStored } from "./replay.js";

/** The method and path of function-API records: no HTTP path is empty, so they never meet HTTP records. */
export const RUN_METHOD = "RUN";
export const RUN_PATH = "";

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

const RUN_OPTIONS = ["scope", "fingerprint", "waitMs"];

export function resolveRunCall(
  key: unknown,
  fn: unknown,
  options: RunOptions,
  resolved: ResolvedOptions,
  api = "run()",
): { scope: string; fingerprint: string; waitMs: number } {
  if (typeof key !== "string" || key.length === 0 || key.length > resolved.maxKeyLength) {
    throw new IdempotencyInvalidKeyError(
      `${api} needs a key: a non-empty string of at most ${resolved.maxKeyLength} characters (maxKeyLength), ` +
        `such as a message id; got ${typeof key === "string" ? `a string of ${key.length}` : typeof key}.`,
    );
  }
  if (typeof fn !== "function") {
    throw new TypeError(`${api} needs a function to protect as its second argument; got ${typeof fn}.`);
  }
  checkOptionNames(options, RUN_OPTIONS, `${api} options: an object { scope?, fingerprint?, waitMs? }`);
  const { scope, fingerprint, waitMs = resolved.waitMs } = options;
  if (scope !== undefined && (typeof scope !== "string" || scope.length === 0)) {
    throw new IdempotencyOptionsError("scope", "expected a non-empty string naming the principal.");
  }
  if (scope === undefined && resolved.scope !== "global") {
    throw new IdempotencyOptionsError(
      "scope",
      `${api} needs { scope } naming the principal, because the engine's scope is a function of an HTTP request. Pass "global" for single-tenant work.`,
    );
  }
  if (fingerprint !== undefined && typeof fingerprint !== "string" && !(fingerprint instanceof Uint8Array)) {
    throw new IdempotencyOptionsError("fingerprint", "expected a string or a Uint8Array.");
  }
  wholeNumberOption("waitMs", waitMs, { min: 0, unit: "milliseconds" });
  return {
    scope: scope ?? "global",
    fingerprint: fingerprint === undefined ? "none" : hashParts(["run", fingerprint]),
    waitMs,
  };
}

export async function runClaimed<T>(
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
  const stored = resultResponse(result);
  execution.start(stored.status, stored.headers);
  if (stored.body === null) execution.omitBody();
  await execution.end(stored.body ?? undefined);
  return result;
}

const EMPTY = new Uint8Array(0);
const JSON_HEADERS: Array<[string, string]> = [["content-type", "application/json"]];

/**
 * How a function's result is stored: `undefined` as a 204, anything else as a 200 with its JSON. A result
 * JSON cannot represent (a BigInt, a cycle) is completed without a body, like an oversized one.
 */
export function resultResponse(result: unknown): StoredResponse {
  if (result === undefined) return { status: 204, headers: [], body: EMPTY };
  let json: string | undefined;
  try {
    json = JSON.stringify(result);
  } catch {
    json = undefined;
  }
  return { status: 200, headers: JSON_HEADERS, body: json === undefined ? null : Buffer.from(json) };
}

export function replayResult(
  bytes: Uint8Array | null,
  base: () => IdempotencyEventBase,
  emit: Emit,
): unknown {
  const stored = decodeStored(bytes, base, emit);
  if (stored === undefined) throw new IdempotencyStoreError("Store begin returned an unreadable record.");
  if (stored === null || stored.body === null) {
    emit(() => ({ ...base(), type: "replayed", status: 410 }));
    throw new IdempotencyResultNotStoredError();
  }
  emit(() => ({ ...base(), type: "replayed", status: stored.status }));
  return stored.status === 204 ? undefined : JSON.parse(Buffer.from(stored.body).toString("utf8"));
}
