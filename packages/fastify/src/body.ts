import type { IncomingMessage } from "node:http";
import { finished, PassThrough, Readable, type ReadableOptions } from "node:stream";
import type { RequestState } from "./state.js";

/** A request payload stream as `preParsing` hooks hand it on (`receivedEncodedLength` for decoded streams). */
type Payload = Readable & { receivedEncodedLength?: number };

/**
 * Reads the raw body of a keyed request in `preParsing`, for the fingerprint, and returns the stream to hand
 * Fastify in its place with the very same bytes, so Fastify's content-type parsers (and the route's
 * `bodyLimit`) work as usual. At most `maxBytes` are kept: past that, `state.bodyTooLarge` is set and the
 * bytes read so far are handed on followed by the rest of the stream.
 *
 * When the payload is the request itself (no earlier `preParsing` hook replaced it), `request.raw` is made
 * readable again with the bytes, so parsers that read `request.raw` directly (`@fastify/multipart`) see the
 * body too.
 */
export async function bufferBody(
  raw: IncomingMessage,
  payload: Payload,
  maxBytes: number,
  state: RequestState,
): Promise<Readable> {
  const { chunks, complete } = await readUpTo(payload, maxBytes);
  if (!complete) {
    state.bodyTooLarge = true;
    const rest = new PassThrough();
    for (const chunk of chunks) rest.write(chunk);
    payload.pipe(rest);
    return withEncodedLength(rest, payload);
  }
  const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
  state.body = body;
  if (payload === raw) {
    rearm(raw, body);
    return raw;
  }
  return withEncodedLength(Readable.from([body], { objectMode: false }), payload);
}

/** Reads until the end, or until more than `maxBytes` arrived (the stream is then left paused). */
function readUpTo(stream: Readable, maxBytes: number): Promise<{ chunks: Buffer[]; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const settle = (complete: boolean, error?: Error | null) => {
      stream.off("data", onData);
      cleanup();
      if (error) reject(error);
      else resolve({ chunks, complete });
    };
    const onData = (chunk: Buffer | string) => {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      chunks.push(bytes);
      received += bytes.length;
      if (received > maxBytes) {
        stream.pause();
        settle(false);
      }
    };
    stream.on("data", onData);
    stream.resume();
    const cleanup = finished(stream, { writable: false }, (error) => settle(true, error));
  });
}

/** A stream handed on in place of a decoding one keeps reporting the encoded length Fastify checks. */
function withEncodedLength(stream: Readable, source: Payload): Readable {
  if (source.receivedEncodedLength !== undefined) {
    Object.defineProperty(stream, "receivedEncodedLength", { get: () => source.receivedEncodedLength });
  }
  return stream;
}

/**
 * Gives a fully read request a fresh readable state holding `bytes`, so Fastify's parser (and anything that
 * reads `request.raw`) sees the body as if nobody had read it. Listeners attached so far are kept.
 */
function rearm(req: IncomingMessage, bytes: Uint8Array): void {
  const initReadable = Readable as unknown as (this: IncomingMessage, options: ReadableOptions) => void;
  initReadable.call(req, { read() {} });
  if (bytes.length > 0) req.push(bytes);
  req.push(null);
}
