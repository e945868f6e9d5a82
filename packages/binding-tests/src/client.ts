import { request as httpRequestRaw, type IncomingHttpHeaders } from "node:http";
import { connect } from "node:net";

/** A response as the client received it. */
export interface HttpResponse {
  status: number;
  /** Node's parsed headers: lower-case names, `set-cookie` an array, other repeats joined. */
  headers: IncomingHttpHeaders;
  /** Name/value pairs exactly as received, in order. */
  rawHeaders: Array<[string, string]>;
  body: Buffer;
  text(): string;
  json(): unknown;
}

/** One request. */
export interface HttpRequestInit {
  /** Default `"POST"`. */
  method?: string;
  /** Request headers; an array value is sent as several header fields. */
  headers?: Record<string, string | string[]>;
  /** The `Idempotency-Key` header; an array sends several fields. */
  key?: string | string[];
  /** A JSON body as text, sent with `Content-Type: application/json`. */
  json?: string;
  /** A raw body (set `content-type` in `headers` yourself). */
  body?: string | Uint8Array;
  /** Send the body with `Transfer-Encoding: chunked`, in two writes, instead of a `Content-Length`. */
  chunked?: boolean;
  /**
   * The request-target sent on the request line instead of the URL's path and query, e.g. an absolute-form
   * `http://127.0.0.1/p` or one with a raw `#fragment`.
   */
  target?: string;
  /** Called once, the moment the first body bytes of the response arrive. */
  onFirstByte?: () => void;
  /** Called synchronously the moment the response's last byte has arrived, before the promise settles. */
  onEnd?: () => void;
}

/** A request in flight, which the test can abort (a client disconnect). */
export interface OpenRequest {
  response: Promise<HttpResponse>;
  /** Destroys the client's socket, as a client that gives up mid-request does. */
  destroy(): void;
}

/**
 * Starts a request over a fresh connection (`Connection: close`, no agent pooling), so each request is
 * independent and a destroyed one affects nothing else.
 *
 * @example
 * ```ts
 * const pending = openRequest(`${app.url}/slow`, { key: "k1" });
 * pending.destroy();
 * ```
 */
export function openRequest(url: string, init: HttpRequestInit = {}): OpenRequest {
  const headers: Record<string, string | string[]> = { ...init.headers };
  let body: Uint8Array | undefined;
  if (init.json !== undefined) {
    headers["content-type"] ??= "application/json";
    body = Buffer.from(init.json);
  } else if (init.body !== undefined) {
    body = typeof init.body === "string" ? Buffer.from(init.body) : init.body;
  }
  const method = init.method ?? "POST";
  if (body === undefined && method !== "GET" && method !== "HEAD") body = new Uint8Array(0);
  if (body !== undefined && !init.chunked) headers["content-length"] = String(body.length);
  if (init.key !== undefined) headers["idempotency-key"] = init.key;

  let destroy: () => void = () => {};
  const response = new Promise<HttpResponse>((resolve, reject) => {
    const target = init.target === undefined ? {} : { path: init.target };
    const req = httpRequestRaw(url, { method, headers, agent: false, ...target }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => {
        if (chunks.length === 0) init.onFirstByte?.();
        chunks.push(chunk);
      });
      res.on("error", reject);
      res.on("end", () => {
        init.onEnd?.();
        const bytes = Buffer.concat(chunks);
        const rawHeaders: Array<[string, string]> = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) {
          rawHeaders.push([res.rawHeaders[i] as string, res.rawHeaders[i + 1] as string]);
        }
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          rawHeaders,
          body: bytes,
          text: () => bytes.toString("utf8"),
          json: () => JSON.parse(bytes.toString("utf8")),
        });
      });
    });
    req.on("error", reject);
    destroy = () => req.destroy();
    if (init.chunked && body !== undefined && body.length > 1) {
      const half = Math.floor(body.length / 2);
      req.write(body.subarray(0, half));
      req.end(body.subarray(half));
    } else {
      req.end(body);
    }
  });
  return { response, destroy: () => destroy() };
}

/**
 * Sends one request over a fresh loopback connection and resolves with the whole response.
 *
 * @example
 * ```ts
 * const res = await httpRequest(`${app.url}/orders`, { key: "k1", json: '{"item":"apple"}' });
 * res.status; // 201
 * ```
 */
export function httpRequest(url: string, init: HttpRequestInit = {}): Promise<HttpResponse> {
  return openRequest(url, init).response;
}

/**
 * A client that leaves mid-upload: sends the head of a `POST` announcing `declaredBytes` of JSON body, then
 * `sentBytes` of it, and closes its connection once `leaveWhen` resolves (the server has the request).
 * Resolves when the socket is closed.
 *
 * @example
 * ```ts
 * const received = new Promise((resolve) => server.once("request", resolve));
 * await abandonUpload(`${app.url}/orders`, { key: "k1", declaredBytes: 100, sentBytes: 10, leaveWhen: received });
 * ```
 */
export async function abandonUpload(
  url: string,
  init: { key: string; declaredBytes: number; sentBytes: number; leaveWhen: Promise<unknown> },
): Promise<void> {
  const { hostname, port, pathname } = new URL(url);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.on("error", () => {}); // the server may reset the connection while it closes
  socket.write(
    `POST ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${init.declaredBytes}\r\nIdempotency-Key: ${init.key}\r\n\r\n` +
      '{"item":"'.padEnd(init.sentBytes, "a").slice(0, init.sentBytes),
  );
  await init.leaveWhen;
  await new Promise<void>((resolve) => {
    socket.once("close", () => resolve());
    socket.destroy();
  });
}
