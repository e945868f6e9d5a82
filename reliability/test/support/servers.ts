/**
 * Application server child processes (`server.mjs`, on the built packages) and the HTTP client the
 * scenarios drive them with. Every child still running is killed when the test process exits.
 */
import { type ChildProcess, fork } from "node:child_process";
import { type Agent, request } from "node:http";
import { fileURLToPath } from "node:url";

const SERVER = fileURLToPath(new URL("./server.mjs", import.meta.url));

export type Binding = "express" | "koa" | "hono" | "fastify";
export const BINDINGS: Binding[] = ["express", "koa", "hono", "fastify"];

export interface ServerConfig {
  binding: Binding;
  store: "sqlite" | "redis" | "postgres" | "memory";
  ledgerPath: string;
  sqlitePath?: string;
  redisUrl?: string;
  /** For `store: "postgres"`: the connection string and the records table (created by the test). */
  databaseUrl?: string;
  postgresTable?: string;
  leaseMs?: number;
  ttlMs?: number;
  onLeaseExpired?: "run-again" | "conflict";
  storeTimeoutMs?: number;
  maxRequestBytes?: number;
  /** Node's `requestTimeout` for the server (checked every 100 ms): a request not fully received gets 408. */
  requestTimeoutMs?: number;
  /** For `store: "memory"`: its `maxEntries`. */
  maxEntries?: number;
  /** For `store: "memory"`: keep every store call's arguments, for `storeCalls()`. */
  keepStoreCalls?: boolean;
}

/** What `server.mjs` answers to "stats": its memory, its active resources by type, its listeners. */
export interface ServerStats {
  memory: NodeJS.MemoryUsage;
  resources: Record<string, number>;
  listeners: { process: number; server: number };
}

/** What `server.mjs` answers to "store-calls": every store call's arguments, and the records they named. */
export interface StoreCalls {
  calls: Array<{ operation: string; args: unknown[] }>;
  records: Array<{ key: string; record: Record<string, unknown> | null }>;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export class ServerProcess {
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly name: string,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null)
        resolve({ code: child.exitCode, signal: child.signalCode });
      else child.once("exit", (code, signal) => resolve({ code, signal }));
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts `server.mjs`; `execArgv` are its Node flags (e.g. `--expose-gc`, so "stats" measures after a GC). */
  static async start(
    config: ServerConfig,
    name: string = config.binding,
    execArgv: string[] = [],
  ): Promise<ServerProcess> {
    const child = fork(SERVER, [JSON.stringify(config)], {
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      execArgv,
    });
    running.add(child);
    child.once("exit", () => running.delete(child));
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    const port = await new Promise<number>((resolve, reject) => {
      child.once("message", (message: { type: string; port: number }) => resolve(message.port));
      child.once("exit", (code, signal) =>
        reject(
          new Error(`${name} server exited (code ${code}, signal ${signal}) before listening:\n${stderr}`),
        ),
      );
    });
    const server = new ServerProcess(child, port, name);
    child.on("message", (message: { type: string; key?: string }) => {
      if (message.type !== "held") return;
      server.#held.add(message.key as string);
      for (const waiter of [...server.#heldWaiters]) waiter();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      server.stderr += chunk.toString("utf8");
    });
    return server;
  }

  /** One IPC request to the server, answered by the message with the same id. */
  ask<T>(type: string): Promise<T> {
    const id = ++this.#asked;
    return new Promise((resolve, reject) => {
      const onMessage = (message: { type: string; id?: number }) => {
        if (message.type !== type || message.id !== id) return;
        this.child.off("message", onMessage);
        this.child.off("exit", onExit);
        resolve(message as T);
      };
      const onExit = () => {
        this.child.off("message", onMessage);
        reject(new Error(`${this.name} exited before answering "${type}":\n${this.stderr}`));
      };
      this.child.on("message", onMessage);
      this.child.once("exit", onExit);
      this.child.send({ type, id });
    });
  }

  #asked = 0;

  #held = new Set<string>();
  #heldWaiters = new Set<() => void>();

  /** Resolves once a handler sent with `hold: true` is waiting on each of `keys`. */
  whenHeld(keys: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!keys.every((key) => this.#held.has(key))) return;
        this.#heldWaiters.delete(check);
        this.child.off("exit", onExit);
        resolve();
      };
      const onExit = () => {
        this.#heldWaiters.delete(check);
        reject(new Error(`${this.name} exited while handlers were starting:\n${this.stderr}`));
      };
      this.#heldWaiters.add(check);
      this.child.once("exit", onExit);
      check();
    });
  }

  /** Lets the handlers held (`hold: true`) on these keys go on. */
  release(keys: string[]): void {
    for (const key of keys) this.#held.delete(key);
    this.child.send({ type: "release", keys });
  }

  stats(): Promise<ServerStats> {
    return this.ask<ServerStats>("stats");
  }

  storeCalls(): Promise<StoreCalls> {
    return this.ask<StoreCalls>("store-calls");
  }

  /** SIGKILL, as a crash: no handler, no cleanup. Resolves once the process is gone. */
  async kill(): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.send({ type: "exit" });
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The header fields as received, names as sent: `[name, value, name, value, …]`. */
  rawHeaders: string[];
  body: Buffer;
  ms: number;
}

export interface Send {
  port: number;
  key?: string;
  tenant?: string;
  handlerMs?: number;
  body?: string;
  agent?: Agent;
  /** The client's own timeout: past it the client destroys its connection and rejects with "timeout". */
  timeoutMs?: number;
  /** The handler waits, its claim held, until `ServerProcess.release` names this key. */
  hold?: boolean;
  /** More request headers (names in lower case). */
  headers?: Record<string, string>;
}

/** One POST /orders over loopback, its whole response read as bytes. */
export function send(options: Send): Promise<Reply> {
  const body = Buffer.from(options.body ?? JSON.stringify({ key: options.key ?? null, amount: 100 }));
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "content-length": String(body.length),
  };
  if (options.key !== undefined) headers["idempotency-key"] = options.key;
  if (options.tenant !== undefined) headers["x-tenant"] = options.tenant;
  if (options.handlerMs !== undefined) headers["x-handler-ms"] = String(options.handlerMs);
  if (options.hold) headers["x-hold"] = "1";
  Object.assign(headers, options.headers);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: options.port,
        method: "POST",
        path: "/orders",
        headers,
        agent: options.agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks),
            ms: performance.now() - started,
          }),
        );
      },
    );
    if (options.timeoutMs !== undefined) {
      const timer = setTimeout(() => req.destroy(new Error("timeout")), options.timeoutMs);
      req.once("close", () => clearTimeout(timer));
    }
    req.on("error", reject);
    req.end(body);
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The `type` of a problem+json body, or undefined. */
export function problemType(reply: Reply): string | undefined {
  if (!String(reply.headers["content-type"]).startsWith("application/problem+json")) return undefined;
  return JSON.parse(reply.body.toString("utf8")).type;
}
