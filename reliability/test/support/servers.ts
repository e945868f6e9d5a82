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

  static async start(config: ServerConfig, name: string = config.binding): Promise<ServerProcess> {
    const child = fork(SERVER, [JSON.stringify(config)], { stdio: ["ignore", "ignore", "pipe", "ipc"] });
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
    child.stderr?.on("data", (chunk: Buffer) => {
      server.stderr += chunk.toString("utf8");
    });
    return server;
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
