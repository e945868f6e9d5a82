/**
 * Helpers for bindings on Node's `http` request (Express, Koa, or your own): the parts of translating an
 * `IncomingMessage` into an `IdempotencyRequest` that do not depend on the framework.
 *
 * @packageDocumentation
 */
import type { IncomingMessage } from "node:http";
import { finished, Readable } from "node:stream";
import type { Execution } from "./engine.js";
import { IdempotencyRequestTooLargeError } from "./errors.js";
import type { IdempotencyRequest } from "./request.js";

export { captureNodeResponse } from "./node-response.js";

/**
 * Case-insensitive header lookup over Node's `rawHeaders`, joining repeated fields with `", "` like WHATWG
 * `Headers.get` (Node's `req.headers` keeps only the first of some repeated fields, which would hide a second
 * `Idempotency-Key`). Indexed on first use.
 *
 * @example
 * ```ts
 * import { nodeHeaders } from "@idempotency/core/node";
 *
 * const headers = nodeHeaders(req.rawHeaders);
 * headers.get("idempotency-key"); // "a, b" when the client sent two fields
 * ```
 */
export function nodeHeaders(rawHeaders: readonly string[]): IdempotencyRequest["headers"] {
  let index: Map<string, string[]> | undefined;
  return {
    get(name) {
      index ??= indexRawHeaders(rawHeaders);
      return index.get(name.toLowerCase())?.join(", ") ?? null;
    },
  };
}

function indexRawHeaders(raw: readonly string[]): Map<string, string[]> {
  const values = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    const list = values.get(name);
    if (list) list.push(value);
    else values.set(name, [value]);
  }
  return values;
}

/**
 * Splits a request target into the concrete path (the record's identity) and the raw query string (part of the
 * fingerprint). An absolute-form target (`http://host/p?q`, sent to proxies) is reduced to its path.
 *
 * @example
 * ```ts
 * import { splitRequestTarget } from "@idempotency/core/node";
 *
 * splitRequestTarget("/api/orders?dry=1"); // { path: "/api/orders", query: "dry=1" }
 * ```
 */
export function splitRequestTarget(target: string): { path: string; query: string } {
  const queryAt = target.indexOf("?");
  const path = queryAt === -1 ? target : target.slice(0, queryAt);
  return {
    path: path.startsWith("/") ? path : absolutePath(path),
    query: queryAt === -1 ? "" : target.slice(queryAt + 1),
  };
}

function absolutePath(target: string): string {
  try {
    return new URL(target).pathname;
  } catch {
    return target;
  }
}

/**
 * Reads a request stream to its end, or rejects with `IdempotencyRequestTooLargeError` as soon as more than
 * `maxBytes` arrived. The rest then flows on unread (Node discards it), so an oversized body is never
 * buffered and a keep-alive connection still reaches its next request. Also resumes a stream that earlier
 * middleware paused. Settles only after the stream has finished (or failed), so a caller may then give the
 * request a fresh readable state without racing its destruction.
 *
 * @example
 * ```ts
 * import { readNodeBody } from "@idempotency/core/node";
 *
 * const request = { ...translated, body: (maxBytes?: number) => (cached ??= readNodeBody(req, maxBytes)) };
 * ```
 */
export function readNodeBody(req: IncomingMessage, maxBytes = Number.POSITIVE_INFINITY): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let settled = false;
    const settle = (error?: Error | null) => {
      if (settled) return;
      settled = true;
      req.off("data", onData);
      cleanup();
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer | string) => {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      received += bytes.length;
      if (received > maxBytes) settle(new IdempotencyRequestTooLargeError(maxBytes));
      else chunks.push(bytes);
    };
    req.on("data", onData);
    req.resume();
    const cleanup = finished(req, { writable: false }, settle);
  });
}

/**
 * Whether the request announced a body: a non-zero `Content-Length`, or a `Transfer-Encoding`. Tells a
 * request that never had a body from one whose body a parser consumed.
 *
 * @example
 * ```ts
 * import { declaresBody } from "@idempotency/core/node";
 *
 * if (req.readableEnded && declaresBody(req) && req.body === undefined) throw new IdempotencyBodyConsumedError(hint);
 * ```
 */
export function declaresBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  if (length !== undefined) return length.trim() !== "0";
  return req.headers["transfer-encoding"] !== undefined;
}

/**
 * After the client left mid-response: reads what is left of the stream that was being piped into the
 * response, into `execution`, and completes it, so that a retry replays the whole response instead of
 * running the handler again. Frameworks destroy a piped body when the response closes (`pipeline`,
 * `on-finished`), so the stream's `destroy` is held off until it has ended. A stream that fails meanwhile
 * abandons the execution (the claim is released). Returns false, doing nothing, when `body` is not a
 * readable stream with something left to read. Never use it for endless streams (server-sent events).
 *
 * @example
 * ```ts
 * import { drainAfterClose } from "@idempotency/core/node";
 *
 * res.once("close", () => {
 *   execution.closed();
 *   if (!res.writableFinished && !drainAfterClose(pipedBody, execution)) void execution.abandon();
 * });
 * ```
 */
export function drainAfterClose(body: unknown, execution: Execution): boolean {
  if (!(body instanceof Readable) || body.readableEnded || body.destroyed) return false;
  const destroy = body.destroy;
  body.destroy = function heldOff(this: Readable) {
    return this;
  };
  const restore = () => {
    body.destroy = destroy;
  };
  body.on("data", (chunk: Buffer | string) => {
    execution.write(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  });
  body.once("end", () => {
    restore();
    void execution.end();
  });
  body.once("error", () => {
    restore();
    void execution.abandon();
  });
  // Unpiping from the closed response pauses the stream: resume it once that has happened.
  setImmediate(() => body.resume());
  return true;
}
