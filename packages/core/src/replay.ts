import { decodeResponse, type StoredResponse } from "./encoding.js";
import type { Decision } from "./engine.js";
import { type Emit, type IdempotencyEventBase, storeErrorEvent } from "./events.js";
import { type IdempotencyProblem, problems } from "./problems.js";

/**
 * Whether a response with this status has no body of its own (RFC 9110 §6.4.1, §8.6): 1xx, 204 and 304. Such
 * a response gets no `Content-Length` describing a body, on a replay or when a binding frames one.
 *
 * @example
 * ```ts
 * import { isBodylessStatus } from "@idempotency/core";
 *
 * if (!isBodylessStatus(status)) headers.set("content-length", String(body.length));
 * ```
 */
export function isBodylessStatus(status: number): boolean {
  return status < 200 || status === 204 || status === 304;
}

/** The decoded record, `null` when it was completed without a response, `undefined` when unreadable. */
export function decodeStored(
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

export function replay(
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
  if (!isBodylessStatus(stored.status)) headers.push(["content-length", String(stored.body.length)]);
  return {
    action: "respond",
    response: { status: stored.status, headers, body: stored.body },
    replayed: true,
  };
}
