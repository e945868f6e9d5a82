/**
 * A minimal binding used by the engine's tests: it drives `Idempotency.handle` and the `Execution` hand-back
 * exactly as the Express, Hono and Koa bindings do, over an in-memory "connection" that records what the
 * client receives and when. If a behaviour can be shown here, the bindings only have to translate.
 */
import { identityKey } from "../src/identity.js";
import {
  type Execution,
  type Idempotency,
  type IdempotencyRequest,
  parseIdempotencyKey,
} from "../src/index.js";
import type { InstrumentedStore } from "../src/testing.js";

export interface HarnessRequest {
  method?: string;
  path?: string;
  query?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** The Idempotency-Key header value, for brevity. */
  key?: string;
}

/** What the client saw. */
export interface ClientView {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  text(): string;
  json(): unknown;
}

/** A Node-like response object the test handler writes to. */
export class FakeResponse {
  statusCode = 200;
  readonly #headers = new Map<string, string | string[]>();
  readonly #sink: ResponseSink;
  #ended = false;

  constructor(sink: ResponseSink) {
    this.#sink = sink;
  }

  setHeader(name: string, value: string | string[]): this {
    this.#headers.set(name.toLowerCase(), value);
    return this;
  }

  writeHead(status: number, headers: Record<string, string | string[]> = {}): this {
    this.statusCode = status;
    for (const [name, value] of Object.entries(headers)) this.setHeader(name, value);
    return this;
  }

  write(chunk: string | Uint8Array): void {
    this.#sink.write(this.statusCode, Object.fromEntries(this.#headers), toBytes(chunk));
  }

  async end(chunk?: string | Uint8Array): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    await this.#sink.end(
      this.statusCode,
      Object.fromEntries(this.#headers),
      chunk ? toBytes(chunk) : undefined,
    );
  }

  get ended(): boolean {
    return this.#ended;
  }
}

interface ResponseSink {
  write(status: number, headers: Record<string, string | string[]>, chunk: Uint8Array): void;
  end(status: number, headers: Record<string, string | string[]>, chunk?: Uint8Array): Promise<void>;
}

export interface HandlerContext {
  /** Declare the request not started (validation failed before any side effect). */
  notStarted(): void;
  /** Simulate the client dropping the connection (its own timeout): the handler goes on, and so does renewal. */
  disconnect(): void;
  /**
   * Simulate a process that froze (a long GC, a paused VM) or died: its renewals stop reaching the store, so
   * the lease runs out. The engine's store must be an `InstrumentedStore` (`@idempotency/core/testing`). A crash is `stall()` plus a
   * handler that never finishes.
   */
  stall(): void;
  /** The client left before the whole request body arrived (what the Node capture reports). */
  requestAborted(): void;
  request: IdempotencyRequest;
}

export type Handler = (res: FakeResponse, context: HandlerContext) => void | Promise<void>;

/** The client end of the in-memory connection. */
class Connection {
  status = 0;
  headers: Record<string, string> = {};
  readonly chunks: Buffer[] = [];
  #headSent = false;
  #open = true;
  constructor(private readonly timeline: string[]) {}

  head(status: number, headers: Record<string, string | string[]> | Array<[string, string]>): void {
    if (this.#headSent || !this.#open) return;
    this.#headSent = true;
    this.status = status;
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
    for (const [name, value] of pairs) {
      const joined = Array.isArray(value) ? value.join(", ") : value;
      const lower = name.toLowerCase();
      this.headers[lower] = lower in this.headers ? `${this.headers[lower]}, ${joined}` : joined;
    }
    this.timeline.push(`client:head ${status}`);
  }

  data(bytes: Uint8Array): void {
    if (bytes.length === 0 || !this.#open) return;
    this.chunks.push(Buffer.from(bytes));
    this.timeline.push(`client:data ${bytes.length}`);
  }

  end(): void {
    if (!this.#open) return;
    this.#open = false;
    this.timeline.push("client:end");
  }

  drop(): void {
    this.#open = false;
    this.timeline.push("client:disconnected");
  }

  view(): ClientView {
    const body = Buffer.concat(this.chunks);
    return {
      status: this.status,
      headers: this.headers,
      body,
      text: () => body.toString("utf8"),
      json: () => JSON.parse(body.toString("utf8")),
    };
  }
}

function toBytes(chunk: string | Uint8Array): Uint8Array {
  return typeof chunk === "string" ? Buffer.from(chunk) : chunk;
}

/** Translates the test request into the neutral request, counting body reads. */
export function neutralRequest(input: HarnessRequest): IdempotencyRequest & { bodyReads: number } {
  // A plain map rather than WHATWG Headers: Node hands bindings raw latin1 values, including invalid ones.
  const headers = new Map(
    Object.entries(input.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value]),
  );
  if (input.key !== undefined) headers.set("idempotency-key", input.key);
  const body = input.body === undefined ? new Uint8Array(0) : toBytes(input.body);
  const request = {
    method: (input.method ?? "POST").toUpperCase(),
    path: input.path ?? "/orders",
    query: input.query ?? "",
    headers: { get: (name: string) => headers.get(name.toLowerCase()) ?? null },
    bodyReads: 0,
    body: async () => {
      request.bodyReads++;
      return body;
    },
    native: input,
  };
  return request;
}

export interface Exchange {
  response: ClientView;
  /** The execution hand-back when the handler ran under a claim. */
  execution: Execution | undefined;
  /** How the request was decided. */
  action: "pass" | "respond" | "execute";
}

/**
 * Sends one request through the engine the way a binding does. Errors thrown by the handler are answered
 * 500 by a stand-in "framework error handler" that writes through the same capture path, as Express's does.
 */
export async function send(
  engine: Idempotency,
  input: HarnessRequest,
  handler: Handler,
  timeline: string[] = [],
): Promise<Exchange> {
  const request = neutralRequest(input);
  const connection = new Connection(timeline);
  const decision = await engine.handle(request);
  const identity = decision.action === "execute" ? await identityOf(engine, request) : undefined;

  if (decision.action === "respond") {
    connection.head(decision.response.status, decision.response.headers);
    connection.data(decision.response.body);
    connection.end();
    return { response: connection.view(), execution: undefined, action: "respond" };
  }

  const execution = decision.action === "execute" ? decision.execution : undefined;
  let started = false;
  const sink: ResponseSink = execution
    ? {
        write(status, headers, chunk) {
          if (!started) execution.start(status, headers);
          started = true;
          const forward = execution.write(chunk);
          if (forward.length > 0) connection.head(status, headers);
          connection.data(forward);
        },
        async end(status, headers, chunk) {
          if (!started) execution.start(status, headers);
          started = true;
          const rest = await execution.end(chunk);
          connection.head(status, headers);
          connection.data(rest);
          connection.end();
        },
      }
    : {
        write(status, headers, chunk) {
          connection.head(status, headers);
          connection.data(chunk);
        },
        async end(status, headers, chunk) {
          connection.head(status, headers);
          if (chunk) connection.data(chunk);
          connection.end();
        },
      };
  const res = new FakeResponse(sink);
  const context: HandlerContext = {
    request,
    notStarted: () => execution?.notStarted(),
    disconnect: () => connection.drop(),
    requestAborted: () => execution?.requestAborted?.(),
    stall: () => {
      if (identity !== undefined) (engine.options.store as InstrumentedStore).silenceOwnerOf(identity);
    },
  };
  try {
    await handler(res, context);
  } catch (error) {
    if (!res.ended) {
      res.statusCode = 500;
      await res.end(JSON.stringify({ error: String(error) }));
    }
  }
  if (!res.ended) await execution?.abandon();
  return { response: connection.view(), execution, action: decision.action };
}

/** The hashed identity the engine claimed for `request`, computed the way the engine does. */
async function identityOf(engine: Idempotency, request: IdempotencyRequest): Promise<string> {
  const { scope, header, maxKeyLength } = engine.options;
  const principal = scope === "global" ? "global" : await scope(request);
  const parsed = parseIdempotencyKey(request.headers.get(header) ?? "", maxKeyLength);
  if (!parsed.ok) throw new Error(`the harness sent an invalid key: ${parsed.reason}`);
  return identityKey(principal, request.method, request.path, parsed.key);
}
