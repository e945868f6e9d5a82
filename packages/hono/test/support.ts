import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import {
  type BeginArgs,
  type IdempotencyEvent,
  type IdempotencyStore,
  MemoryStore,
  type StoredRecord,
} from "@idempotency/core";
import type { Hono } from "hono";

export interface RunningServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves a Hono app with @hono/node-server on a free loopback port. */
export function start(app: Hono): Promise<RunningServer> {
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info: AddressInfo) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            if ("closeAllConnections" in server) server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}

export interface ClientResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text(): string;
  json(): unknown;
}

export interface SendOptions {
  method?: string;
  path: string;
  key?: string;
  /** Raw header lines, e.g. `[["idempotency-key", "a"], ["idempotency-key", "b"]]` for two fields. */
  headers?: Array<[string, string]>;
  body?: string | Uint8Array;
  json?: unknown;
  /** Send the body with `Transfer-Encoding: chunked`, in two writes, instead of a `Content-Length`. */
  chunked?: boolean;
}

/** One HTTP/1.1 request over a fresh loopback connection; resolves when the whole response has arrived. */
export function send(server: RunningServer, options: SendOptions): Promise<ClientResponse> {
  // Raw header lines keep repeated fields apart; Node then adds no Host header of its own.
  const headers: Array<[string, string]> = [["host", `127.0.0.1:${server.port}`], ...(options.headers ?? [])];
  if (options.key !== undefined) headers.push(["idempotency-key", options.key]);
  let body: Uint8Array | undefined;
  if (options.json !== undefined) {
    body = Buffer.from(JSON.stringify(options.json));
    headers.push(["content-type", "application/json"]);
  } else if (options.body !== undefined) {
    body = typeof options.body === "string" ? Buffer.from(options.body) : options.body;
  }
  if (body && options.chunked) headers.push(["transfer-encoding", "chunked"]);
  else if (body) headers.push(["content-length", String(body.length)]);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port: server.port,
        method: options.method ?? "POST",
        path: options.path,
        headers: headers.flat(),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => {
          const bytes = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: bytes,
            text: () => bytes.toString("utf8"),
            json: () => JSON.parse(bytes.toString("utf8")),
          });
        });
      },
    );
    req.on("error", reject);
    if (body && options.chunked) {
      const half = Math.floor(body.length / 2);
      req.write(body.subarray(0, half));
      req.end(body.subarray(half));
    } else req.end(body);
  });
}

/** A promise with its resolve function exposed, to hold a handler open until the test lets it go. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Collects engine events and resolves waiters when a given event type arrives. */
export class EventLog {
  readonly events: IdempotencyEvent[] = [];
  readonly #waiters: Array<{ type: string; resolve: (event: IdempotencyEvent) => void }> = [];

  readonly onEvent = (event: IdempotencyEvent): void => {
    this.events.push(event);
    for (const waiter of [...this.#waiters]) {
      if (waiter.type !== event.type) continue;
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      waiter.resolve(event);
    }
  };

  types(): string[] {
    return this.events.map((event) => event.type);
  }

  /** The next event of `type` (or a past one not yet waited for). */
  next(type: IdempotencyEvent["type"]): Promise<IdempotencyEvent> {
    return new Promise((resolve) => this.#waiters.push({ type, resolve }));
  }
}

/** A MemoryStore whose `complete` waits for the test to open a gate, to observe what the client sees meanwhile. */
export class GatedCompleteStore implements IdempotencyStore {
  readonly inner = new MemoryStore();
  readonly gate = deferred();
  readonly completeCalled = deferred();

  begin(key: string, args: BeginArgs) {
    return this.inner.begin(key, args);
  }
  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number) {
    this.completeCalled.resolve();
    await this.gate.promise;
    return this.inner.complete(key, token, response, ttlMs);
  }
  extend(key: string, token: string, leaseMs: number) {
    return this.inner.extend(key, token, leaseMs);
  }
  release(key: string, token: string) {
    return this.inner.release(key, token);
  }
  get(key: string): Promise<StoredRecord | null> {
    return this.inner.get(key);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
}
