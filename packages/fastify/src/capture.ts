import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { Execution, ResponseHeadersInput } from "@idempotency/core";
import type { FastifyReply } from "fastify";

/** Whether Fastify can send this `onSend` payload; anything else makes it throw and answer with an error. */
export function isSendable(payload: unknown): boolean {
  return (
    payload === undefined ||
    payload === null ||
    typeof payload === "string" ||
    payload instanceof Uint8Array ||
    isNodeStream(payload) ||
    isWebStream(payload) ||
    isResponse(payload)
  );
}

/**
 * Hands a claimed response to the engine from the route's last `onSend` hook and resolves with the payload
 * Fastify sends in its place. A complete body (string, Buffer, none) resolves once the record is completed,
 * before Fastify writes anything; a stream is wrapped so that every chunk goes through `execution.write` and
 * its end waits for `execution.end()`. A `Response` payload's status and headers are applied to the reply
 * first, as Fastify would after this hook.
 */
export async function capturePayload(
  reply: FastifyReply,
  payload: unknown,
  execution: Execution,
): Promise<unknown> {
  let body = payload;
  if (isResponse(body)) {
    reply.code(body.status);
    for (const [name, value] of body.headers) reply.header(name, value);
    body = body.body;
  }
  const status = reply.statusCode;
  if (body === undefined || body === null) {
    execution.start(status, reply.getHeaders() as ResponseHeadersInput);
    await execution.end();
    return replaced(reply, execution) ?? body;
  }
  if (status < 200 || status === 204) {
    // Fastify sends these without Content-Type, Content-Length or any body (RFC 9110 §8.6).
    const headers = { ...reply.getHeaders(), "content-type": undefined, "content-length": undefined };
    execution.start(status, headers as ResponseHeadersInput);
    await execution.end();
    return replaced(reply, execution) ?? body;
  }
  execution.start(status, reply.getHeaders() as ResponseHeadersInput);
  if (execution.holdsResponse && (isNodeStream(body) || isWebStream(body))) {
    // Nothing may go out before the end (a transaction commits first): read the stream whole.
    const source = isNodeStream(body) ? body : Readable.fromWeb(body as WebReadableStream);
    const chunks: Buffer[] = [];
    for await (const chunk of source)
      chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : toBuffer(chunk));
    body = Buffer.concat(chunks);
  } else if (isNodeStream(body)) return new CapturedBody(body, execution);
  else if (isWebStream(body)) return new CapturedBody(Readable.fromWeb(body as WebReadableStream), execution);
  const bytes = typeof body === "string" ? Buffer.from(body) : toBuffer(body as Uint8Array);
  await execution.end(bytes);
  return replaced(reply, execution) ?? bytes;
}

/** Applies the execution's replacement (a 503 after a failed commit) to the reply, and returns its body. */
function replaced(reply: FastifyReply, execution: Execution): Buffer | undefined {
  const replacement = execution.replacement;
  if (replacement === undefined) return undefined;
  for (const name of Object.keys(reply.getHeaders())) reply.removeHeader(name);
  reply.code(replacement.status);
  const grouped = new Map<string, string[]>();
  for (const [name, value] of replacement.headers) grouped.set(name, [...(grouped.get(name) ?? []), value]);
  for (const [name, values] of grouped) reply.header(name, values.length === 1 ? values[0] : values);
  return toBuffer(replacement.body);
}

/**
 * A response body that passes every chunk of `source` through `execution.write` (forwarding what it
 * returns) and ends only after `execution.end()` completed the record. When Fastify destroys it because the
 * client went away, the source is still read to its end, so the whole response is stored and a retry
 * replays it; do not protect endless streams (server-sent events). A source that fails releases the claim.
 */
class CapturedBody extends Readable {
  readonly #source: Readable;
  readonly #execution: Execution;
  #sourceDone = false;
  #clientGone = false;

  constructor(source: Readable, execution: Execution) {
    super();
    this.#source = source;
    this.#execution = execution;
    source.on("data", (chunk: unknown) => this.#forward(chunk));
    source.once("end", () => void this.#end());
    source.once("error", (error: Error) => void this.#fail(error));
    source.pause(); // flows when this stream is read
  }

  override _read(): void {
    this.#source.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#sourceDone) {
      this.#clientGone = true;
      this.#source.resume();
    }
    callback(error);
  }

  #forward(chunk: unknown): void {
    if (this.#sourceDone) return;
    if (typeof chunk !== "string" && !(chunk instanceof Uint8Array)) {
      this.#source.destroy(
        new TypeError(`A response stream must produce strings or bytes; got ${typeof chunk}.`),
      );
      return;
    }
    const bytes = this.#execution.write(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    if (this.#clientGone || bytes.length === 0) return;
    if (!this.push(bytes)) this.#source.pause();
  }

  async #end(): Promise<void> {
    this.#sourceDone = true;
    const rest = await this.#execution.end();
    if (this.#clientGone) return;
    if (rest.length > 0) this.push(rest);
    this.push(null);
  }

  async #fail(error: Error): Promise<void> {
    this.#sourceDone = true;
    await this.#execution.abandon();
    if (!this.#clientGone) this.destroy(error);
  }
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function isNodeStream(payload: unknown): payload is Readable {
  return typeof (payload as { pipe?: unknown } | null)?.pipe === "function";
}

function isWebStream(payload: unknown): boolean {
  return typeof (payload as { getReader?: unknown } | null)?.getReader === "function";
}

function isResponse(payload: unknown): payload is Response {
  return Object.prototype.toString.call(payload) === "[object Response]";
}
