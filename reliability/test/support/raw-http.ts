/**
 * A raw-socket HTTP/1.1 client for the fuzz scenario. `node:http`'s client refuses to send most of what a
 * fuzzer wants (control characters in a field value, two `Idempotency-Key` fields in one order, a wrong
 * `Content-Length`, chunk extensions and trailers), so requests are written as bytes and the answers parsed
 * here: as many responses as the server sends on the connection, until the expected number arrived, the
 * server closed it, or the deadline passed. The client never half-closes its side, so a request whose body
 * is shorter than its `Content-Length` stays open until the server gives up on it.
 */
import { connect } from "node:net";

export interface RawResponse {
  status: number;
  /** Field names in lower case, in the order received. */
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface RawExchange {
  responses: RawResponse[];
  /** The server closed (or reset) the connection before the deadline. */
  closed: boolean;
  /** The deadline passed first: the client destroyed the connection itself. */
  timedOut: boolean;
  ms: number;
}

export interface RawOptions {
  /** Stop (and destroy the connection) once this many responses arrived. */
  responses?: number;
  /** Past this the exchange ends with `timedOut`. */
  deadlineMs: number;
  /** Requests on the connection that are HEAD, in order: their responses have no body whatever the head says. */
  head?: boolean[];
}

/** The value of a response field (repeated fields joined with ", "), or undefined. */
export function field(response: RawResponse, name: string): string | undefined {
  const values = response.headers.filter(([n]) => n === name).map(([, value]) => value);
  return values.length === 0 ? undefined : values.join(", ");
}

/** Writes `request` on a fresh loopback connection and reads what comes back. */
export function exchange(port: number, request: Buffer, options: RawOptions): Promise<RawExchange> {
  const started = performance.now();
  const wanted = options.responses ?? 1;
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const responses: RawResponse[] = [];
    let buffer = Buffer.alloc(0);
    let done = false;
    const finish = (closed: boolean, timedOut: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ responses, closed, timedOut, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish(false, true), options.deadlineMs);
    const parse = (atClose: boolean) => {
      for (;;) {
        const parsed = parseResponse(buffer, options.head?.[responses.length] ?? false, atClose);
        if (parsed === undefined) return;
        buffer = buffer.subarray(parsed.consumed);
        if (parsed.response.status >= 200) responses.push(parsed.response); // 1xx are interim
        if (responses.length >= wanted) return finish(false, false);
        if (parsed.untilClose) return;
      }
    };
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      parse(false);
    });
    socket.on("error", () => undefined); // a reset is a close; what arrived before it still counts
    socket.on("close", () => {
      parse(true);
      finish(true, false);
    });
    socket.write(request);
  });
}

/** One response at the start of `buffer`, or undefined while it is incomplete. */
function parseResponse(
  buffer: Buffer,
  head: boolean,
  atClose: boolean,
): { response: RawResponse; consumed: number; untilClose: boolean } | undefined {
  const end = buffer.indexOf("\r\n\r\n");
  if (end === -1) return undefined;
  const lines = buffer.toString("latin1", 0, end).split("\r\n");
  const status = Number((lines[0] ?? "").split(" ")[1]);
  const headers: Array<[string, string]> = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    headers.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
  }
  const response: RawResponse = { status, headers, body: Buffer.alloc(0) };
  const start = end + 4;
  if (head || status < 200 || status === 204 || status === 304) {
    return { response, consumed: start, untilClose: false };
  }
  if (field(response, "transfer-encoding")?.toLowerCase().includes("chunked")) {
    const chunks: Buffer[] = [];
    let offset = start;
    for (;;) {
      const lineEnd = buffer.indexOf("\r\n", offset);
      if (lineEnd === -1) return undefined;
      const size = Number.parseInt(buffer.toString("latin1", offset, lineEnd).split(";")[0] ?? "", 16);
      offset = lineEnd + 2;
      if (size === 0) {
        const trailerEnd = buffer.indexOf("\r\n", offset);
        if (trailerEnd === -1) return undefined;
        if (trailerEnd === offset) {
          response.body = Buffer.concat(chunks);
          return { response, consumed: trailerEnd + 2, untilClose: false };
        }
        const afterTrailers = buffer.indexOf("\r\n\r\n", offset);
        if (afterTrailers === -1) return undefined;
        response.body = Buffer.concat(chunks);
        return { response, consumed: afterTrailers + 4, untilClose: false };
      }
      if (buffer.length < offset + size + 2) return undefined;
      chunks.push(buffer.subarray(offset, offset + size));
      offset += size + 2;
    }
  }
  const length = field(response, "content-length");
  if (length !== undefined) {
    const size = Number(length);
    if (buffer.length < start + size) return undefined;
    response.body = Buffer.from(buffer.subarray(start, start + size));
    return { response, consumed: start + size, untilClose: false };
  }
  // No framing: the body runs to the end of the connection (Node's own 400 and 408 answers have none).
  if (!atClose) return undefined;
  response.body = Buffer.from(buffer.subarray(start));
  return { response, consumed: buffer.length, untilClose: true };
}

/** How a request body is framed on the wire. */
export type Framing =
  | { kind: "length"; declared?: string[] }
  | { kind: "chunked"; sizes: number[]; extensions: string[]; trailers: Array<[string, string]> }
  | { kind: "none" };

export interface RawRequest {
  method: string;
  target: string;
  /** Field values as bytes (latin1 strings are written byte for byte). */
  headers: Array<[string, string | Buffer]>;
  body: Buffer;
  framing: Framing;
  /** Bytes written after the message (a pipelined request, or garbage). */
  after?: Buffer;
}

/** The request as bytes on the wire. `declared` overrides the Content-Length fields (several, or a wrong value). */
export function encodeRequest(request: RawRequest): Buffer {
  const parts: Buffer[] = [Buffer.from(`${request.method} ${request.target} HTTP/1.1\r\n`, "latin1")];
  const fieldLine = (name: string, value: string | Buffer) =>
    Buffer.concat([Buffer.from(`${name}: `, "latin1"), Buffer.from(value), Buffer.from("\r\n")]);
  parts.push(fieldLine("Host", "127.0.0.1"));
  for (const [name, value] of request.headers)
    parts.push(fieldLine(name, typeof value === "string" ? Buffer.from(value, "latin1") : value));
  const { framing, body } = request;
  if (framing.kind === "length") {
    for (const declared of framing.declared ?? [String(body.length)])
      parts.push(fieldLine("Content-Length", declared));
    parts.push(Buffer.from("\r\n"), body);
  } else if (framing.kind === "chunked") {
    parts.push(fieldLine("Transfer-Encoding", "chunked"), Buffer.from("\r\n"));
    let offset = 0;
    let i = 0;
    while (offset < body.length) {
      const size = Math.min(
        Math.max(1, framing.sizes[i % Math.max(1, framing.sizes.length)] ?? 1),
        body.length - offset,
      );
      const extension = framing.extensions[i % Math.max(1, framing.extensions.length)] ?? "";
      parts.push(Buffer.from(`${size.toString(16)}${extension}\r\n`, "latin1"));
      parts.push(body.subarray(offset, offset + size), Buffer.from("\r\n"));
      offset += size;
      i++;
    }
    parts.push(Buffer.from("0\r\n"));
    for (const [name, value] of framing.trailers) parts.push(fieldLine(name, value));
    parts.push(Buffer.from("\r\n"));
  } else {
    parts.push(Buffer.from("\r\n"));
  }
  if (request.after) parts.push(request.after);
  return Buffer.concat(parts);
}
