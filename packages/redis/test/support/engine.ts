/**
 * Drives the core engine the way a framework binding does (handle → respond, or execute with start/write/end),
 * so the Redis store is tested under the engine's real sequence of store calls.
 */
import type { Idempotency, IdempotencyRequest } from "@idempotency/core";

export interface RequestInit {
  key: string;
  body?: string;
  path?: string;
  method?: string;
}

/** What the handler answers. */
export interface HandlerReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** What the client received. */
export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Whether the handler ran for this request. */
  executed: boolean;
}

export function requestOf(init: RequestInit): IdempotencyRequest {
  const headers = new Map<string, string>([
    ["idempotency-key", init.key],
    ["content-type", "application/json"],
  ]);
  const body = new TextEncoder().encode(init.body ?? "{}");
  return {
    method: init.method ?? "POST",
    path: init.path ?? "/orders",
    query: "",
    headers: { get: (name) => headers.get(name.toLowerCase()) ?? null },
    body: async () => body,
    native: undefined,
  };
}

/** Sends one request through the engine; `handler` runs only when the engine says so. */
export async function send(
  idempotency: Idempotency,
  init: RequestInit,
  handler: () => Promise<HandlerReply> | HandlerReply,
): Promise<ClientResponse> {
  const decision = await idempotency.handle(requestOf(init));
  if (decision.action === "respond") {
    const { status, headers, body } = decision.response;
    return {
      status,
      headers: Object.fromEntries(headers),
      body: Buffer.from(body).toString("utf8"),
      executed: false,
    };
  }
  const reply = await handler();
  if (decision.action === "pass") return { ...reply, executed: true };
  const { execution } = decision;
  execution.start(reply.status, reply.headers);
  const sent = [Buffer.from(execution.write(new TextEncoder().encode(reply.body)))];
  sent.push(Buffer.from(await execution.end()));
  return {
    status: reply.status,
    headers: reply.headers,
    body: Buffer.concat(sent).toString("utf8"),
    executed: true,
  };
}

/** A promise with its resolve function exposed, to hold a handler open until the test lets it go. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
