import type { PreparedResponse } from "@idempotency/core";
import type { FastifyReply } from "fastify";
import type { RequestState } from "./state.js";

/**
 * Sends a replay or a problem through `reply.send`, so the route's other `onSend` hooks and the headers
 * earlier hooks set (CORS) apply to it as to any response; the stored headers win where both set one.
 */
export function sendPrepared(
  reply: FastifyReply,
  response: PreparedResponse,
  state: RequestState | null,
): void {
  reply.code(response.status);
  let typed = false;
  for (const [name, values] of groupHeaders(response.headers)) {
    if (name === "content-type") typed = true;
    reply.header(name, values.length === 1 ? values[0] : values);
  }
  const { body } = response;
  if (body.length === 0) {
    reply.send();
    return;
  }
  // Fastify labels a Buffer without a type application/octet-stream; the stored response had none.
  if (!typed && state !== null) state.untyped = true;
  reply.send(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}

/** Repeated names as one list each (`reply.header` replaces a value, except `set-cookie`, which it adds to). */
function groupHeaders(headers: ReadonlyArray<[string, string]>): Map<string, string[]> {
  const grouped = new Map<string, string[]>();
  for (const [name, value] of headers) {
    const values = grouped.get(name);
    if (values) values.push(value);
    else grouped.set(name, [value]);
  }
  return grouped;
}
