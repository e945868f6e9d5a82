import type { IncomingMessage } from "node:http";
import { finished, Readable, type ReadableOptions } from "node:stream";
import type { IdempotencyRequest } from "@idempotency/core";

/** The Express request fields this binding reads; plain Node requests work too. */
export interface ExpressRequestLike extends IncomingMessage {
  originalUrl?: string;
  body?: unknown;
  rawBody?: unknown;
}

/** Translates an Express request into the engine's neutral request. */
export function neutralRequest(req: ExpressRequestLike): IdempotencyRequest {
  // originalUrl keeps the mount path (app.use("/api", router)); req.url is relative to the router.
  const target = req.originalUrl ?? req.url ?? "/";
  const queryAt = target.indexOf("?");
  let cached: Promise<Uint8Array> | undefined;
  let headerValues: Map<string, string[]> | undefined;
  return {
    method: (req.method ?? "GET").toUpperCase(),
    path: queryAt === -1 ? target : target.slice(0, queryAt),
    query: queryAt === -1 ? "" : target.slice(queryAt + 1),
    headers: {
      get(name) {
        // From the raw fields: Node keeps only the first of some duplicated headers, WHATWG Headers joins all.
        headerValues ??= indexRawHeaders(req.rawHeaders);
        return headerValues.get(name.toLowerCase())?.join(", ") ?? null;
      },
    },
    body: () => {
      cached ??= requestBody(req);
      return cached;
    },
    native: req,
  };
}

function indexRawHeaders(raw: readonly string[]): Map<string, string[]> {
  const values = new Map<string, string[]>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const list = values.get(name);
    if (list) list.push(raw[i + 1] as string);
    else values.set(name, [raw[i + 1] as string]);
  }
  return values;
}

/**
 * The raw request body. Unread: read it, then make the stream readable again for later body parsers and
 * handlers. Already consumed by a body parser: the bytes it kept (`req.rawBody` from a `verify` hook, or the
 * `Buffer` of `express.raw()`), else the parsed body (text as UTF-8, JSON re-serialised).
 */
async function requestBody(req: ExpressRequestLike): Promise<Uint8Array> {
  if (isBytes(req.rawBody)) return req.rawBody;
  if (!req.readableDidRead && !req.readableEnded && !req.destroyed) {
    const bytes = await readAll(req);
    rearm(req, bytes);
    return bytes;
  }
  const body = req.body;
  if (isBytes(body)) return body;
  if (typeof body === "string") return Buffer.from(body, "utf8");
  if (body === undefined || body === null) return new Uint8Array(0);
  return Buffer.from(JSON.stringify(body), "utf8");
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer | string) => {
      chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    };
    req.on("data", onData);
    req.resume(); // also when an earlier middleware paused it
    // Settles after 'close' when the stream auto-destroys, so rearm() never races the destroy.
    finished(req, { writable: false }, (error) => {
      req.off("data", onData);
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    });
  });
}

/**
 * Gives a fully read request a fresh readable state holding `bytes`, so `express.json()` and friends, or a
 * handler reading `req` itself, see the body as if nobody had read it. Listeners attached so far are kept.
 */
function rearm(req: IncomingMessage, bytes: Uint8Array): void {
  const initReadable = Readable as unknown as (this: IncomingMessage, options: ReadableOptions) => void;
  initReadable.call(req, { read() {} });
  if (bytes.length > 0) req.push(bytes);
  req.push(null);
}
