import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { type AddressInfo, createServer as createTcpServer, Socket } from "node:net";
import { type IdempotencyOptions, MemoryStore } from "@idempotency/core";
import { idempotency } from "@idempotency/express";
import express from "express";

/** A fixed instant for the server's engine and store: leases never move, so `Retry-After` is exact. */
export const T0 = 1_700_000_000_000;

export interface FakeClock {
  now(): number;
  /** Records each wait and moves the clock by it, at once. */
  sleep(ms: number): Promise<void>;
  /** Every wait the client asked for, in order. */
  delays: number[];
  /** `{ now, sleep }`, to spread into the client's options. */
  options: { now(): number; sleep(ms: number): Promise<void> };
}

/** An injected clock for the client: waits take no wall time, and `now()` moves by exactly what was waited. */
export function fakeClock(start = T0): FakeClock {
  let time = start;
  const delays: number[] = [];
  const now = () => time;
  const sleep = async (ms: number) => {
    delays.push(ms);
    time += ms;
  };
  return { now, sleep, delays, options: { now, sleep } };
}

/** A promise with its resolve function, for gates and "it happened" signals. */
export function deferred<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

export interface Running {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Listens on a free loopback port. */
export async function listen(server: Server): Promise<Running> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

export interface OrdersServer extends Running {
  /** How many times the side effect (creating an order) ran. */
  executions(): number;
  /** The `Idempotency-Key` header of every request that reached the server, in order. */
  keys: Array<string | undefined>;
  /** Resolves when the first order handler has started (after its side effect). */
  started: Promise<void>;
  /** Resolves when the first order's response has ended (its record is completed by then). */
  finished: Promise<void>;
  /** Resolves when the connection of the first order request has closed: its client left. */
  clientLeft: Promise<void>;
}

/**
 * An Express orders API behind `@idempotency/express` on a MemoryStore, the engine and store on a frozen
 * clock unless `now` gives them one. `gate`: the first order handler waits for it after its side effect.
 * `workMs`: the first order handler then works this long (a `setTimeout`, which fake timers can drive).
 * `failFirst`: the first order answers 500 (the engine releases the key, so a retry runs again).
 */
export async function ordersServer(
  settings: {
    gate?: Promise<void>;
    workMs?: number;
    failFirst?: boolean;
    now?: () => number;
    engine?: Partial<IdempotencyOptions>;
  } = {},
): Promise<OrdersServer> {
  const now = settings.now ?? (() => T0);
  const keys: Array<string | undefined> = [];
  const started = deferred();
  const finished = deferred();
  const clientLeft = deferred();
  let executions = 0;
  const app = express();
  app.use((req, _res, next) => {
    keys.push(req.headers["idempotency-key"] as string | undefined);
    next();
  });
  const guard = idempotency({ store: new MemoryStore({ now }), scope: "global", now, ...settings.engine });
  app.post("/orders", guard, express.json(), async (req, res) => {
    const id = ++executions;
    if (id === 1) {
      res.on("finish", () => finished.resolve());
      req.socket.once("close", () => clientLeft.resolve());
      started.resolve();
      if (settings.gate) await settings.gate;
      if (settings.workMs !== undefined) {
        await new Promise((done) => setTimeout(done, settings.workMs));
      }
      if (settings.failFirst) {
        res.status(500).json({ error: "the database went away" });
        return;
      }
    }
    res.status(201).location(`/orders/${id}`).json({ id, item: req.body.item });
  });
  app.post("/uploads", guard, (req, res) => {
    executions++;
    let length = 0;
    req.on("data", (chunk: Buffer) => {
      length += chunk.length;
    });
    req.on("end", () => {
      res.status(201).json({ id: executions, contentType: req.headers["content-type"], length });
    });
  });
  const running = await listen(createServer(app));
  return {
    ...running,
    executions: () => executions,
    keys,
    started: started.promise,
    finished: finished.promise,
    clientLeft: clientLeft.promise,
  };
}

/** Events as they happen, and a promise for the moment there are `count` of them. */
export interface EventLog<T> {
  events: T[];
  /** Records an event (pass it as the callback). */
  push(event: T): void;
  /** Resolves once `count` events have been recorded. */
  reached(count: number): Promise<void>;
}

export function eventLog<T>(): EventLog<T> {
  const events: T[] = [];
  const waiting: Array<{ count: number; resolve(): void }> = [];
  const settle = () => {
    for (const waiter of waiting.filter(({ count }) => events.length >= count)) {
      waiting.splice(waiting.indexOf(waiter), 1);
      waiter.resolve();
    }
  };
  return {
    events,
    push: (event) => {
      events.push(event);
      settle();
    },
    reached: (count) =>
      new Promise<void>((resolve) => {
        waiting.push({ count, resolve });
        settle();
      }),
  };
}

/** One scripted answer of {@link scriptedServer}. */
export interface Scripted {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** Suppress Node's automatic `Date` header. */
  noDate?: boolean;
  /** Never answer (the request hangs until the server closes). */
  hang?: boolean;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/**
 * A plain HTTP server that answers with `script` in order (repeating the last entry): a server that speaks
 * only the IETF draft's statuses and headers, nothing of ours.
 */
export async function scriptedServer(script: Scripted[]): Promise<Running & { requests: RecordedRequest[] }> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      requests.push({
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      const answer = script[Math.min(requests.length, script.length) - 1]!;
      if (answer.hang) return;
      if (answer.noDate) res.sendDate = false;
      res.writeHead(answer.status, answer.headers ?? {});
      res.end(answer.body ?? "");
    });
  });
  return { ...(await listen(server)), requests };
}

export const problemJson = (type: string, status: number, title: string, detail = "") =>
  JSON.stringify({ type, title, status, detail });

/**
 * What the proxy does with one connection: `"pass"` forwards both ways; `"lose-response"` forwards the
 * request, lets the server answer in full, then closes the client's connection without forwarding a byte of
 * the response (the side effect ran, the client never hears of it); `"drop-after-request"` closes the
 * client's connection as soon as the whole request has been forwarded, while the server is still working.
 */
export type ConnectionFate = "pass" | "lose-response" | "drop-after-request";

export interface FlakyProxy extends Running {
  /** The raw bytes of each request body that went through, one entry per request, in order. */
  bodies: Buffer[];
  /** How many connections the proxy accepted. */
  connections(): number;
}

/**
 * A TCP proxy on loopback in front of `targetPort` that decides the fate of connection `i` by `fates[i]`
 * (then `"pass"`): the network between a client and a server that really executes every request.
 */
export async function flakyProxy(targetPort: number, fates: ConnectionFate[]): Promise<FlakyProxy> {
  const bodies: Buffer[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createTcpServer((client) => {
    const fate = fates[accepted++] ?? "pass";
    const upstream = new Socket();
    sockets.add(client).add(upstream);
    for (const socket of [client, upstream]) {
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    }
    upstream.connect(targetPort, "127.0.0.1");
    const request = new MessageReader((body) => {
      bodies.push(body);
      if (fate === "drop-after-request") client.destroy();
    });
    const response = new MessageReader(() => {
      if (fate === "lose-response") {
        client.destroy();
        upstream.destroy();
      }
    });
    client.on("data", (chunk: Buffer) => {
      request.push(chunk);
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (fate === "pass") client.write(chunk);
      response.push(chunk);
    });
    client.on("close", () => {
      if (fate === "pass") upstream.destroy();
    });
    upstream.on("close", () => client.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    bodies,
    connections: () => accepted,
    close: () =>
      new Promise<void>((done) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => done());
      }),
  };
}

/**
 * Splits a byte stream into HTTP/1.1 messages (Content-Length or chunked bodies) and calls `onMessage` with
 * each body once it is complete.
 */
class MessageReader {
  #buffer = Buffer.alloc(0);
  readonly #onMessage: (body: Buffer) => void;

  constructor(onMessage: (body: Buffer) => void) {
    this.#onMessage = onMessage;
  }

  push(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      const end = this.#buffer.indexOf("\r\n\r\n");
      if (end === -1) return;
      const head = this.#buffer.subarray(0, end).toString("latin1").toLowerCase();
      const rest = this.#buffer.subarray(end + 4);
      const length = /\r\ncontent-length: *(\d+)/.exec(head);
      if (length) {
        const size = Number(length[1]);
        if (rest.length < size) return;
        this.#buffer = rest.subarray(size);
        this.#onMessage(rest.subarray(0, size));
      } else if (/\r\ntransfer-encoding: *chunked/.test(head)) {
        const last = rest.indexOf("0\r\n\r\n");
        if (last === -1) return;
        this.#buffer = rest.subarray(last + 5);
        this.#onMessage(rest.subarray(0, last + 5));
      } else {
        this.#buffer = rest;
        this.#onMessage(Buffer.alloc(0));
      }
    }
  }
}
