import type { OutgoingHttpHeaders } from "node:http";
import type { PreparedResponse } from "@idempotency/core";
import { groupHeaders } from "@idempotency/core/node";
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
  for (const [name, value] of groupHeaders(response.headers)) headers[name] = value;
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
  for (const [name, value] of groupHeaders(response.headers)) reply.header(name, value);
  const { body } = response;
  reply.send(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}
