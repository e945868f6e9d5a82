import type { OutgoingHttpHeaders } from "node:http";
import type { PreparedResponse } from "@idempotency/core";
import type { FastifyReply } from "fastify";

/**
 * Sends a replay exactly as it was stored: the reply is hijacked and the stored status, headers and bytes
 * are written to the Node response, so the route's `onSend` hooks (which already shaped the stored response:
 * compression, envelopes, ETags) do not run on it a second time. Headers that earlier hooks set on the reply
 * (CORS, security headers) are kept unless the stored response has the same header. `onResponse` hooks and
 * request logging still see it.
 */
export function sendReplay(reply: FastifyReply, response: PreparedResponse): void {
  const headers = { ...reply.getHeaders() } as OutgoingHttpHeaders;
  for (const [name, values] of groupHeaders(response.headers)) {
    headers[name] = values.length === 1 ? values[0] : values;
  }
  reply.hijack();
  reply.raw.writeHead(response.status, headers);
  reply.raw.end(response.body);
}

/**
 * Sends one of the engine's problems (400, 409, 413, 422, 503) through `reply.send`, as any other response
 * of the route: its `onSend` hooks apply to it.
 */
export function sendProblem(reply: FastifyReply, response: PreparedResponse): void {
  reply.code(response.status);
  for (const [name, values] of groupHeaders(response.headers)) {
    reply.header(name, values.length === 1 ? values[0] : values);
  }
  const { body } = response;
  reply.send(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}

/** Repeated names as one list each (`reply.header` and `writeHead` take a list for a repeated header). */
function groupHeaders(headers: ReadonlyArray<[string, string]>): Map<string, string[]> {
  const grouped = new Map<string, string[]>();
  for (const [name, value] of headers) {
    const values = grouped.get(name);
    if (values) values.push(value);
    else grouped.set(name, [value]);
  }
  return grouped;
}
