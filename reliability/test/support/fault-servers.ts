/**
 * Server child processes on `fault-server.mjs` (Express on the built packages), for the scenarios that watch
 * engine events and steer a handler: every event and every execution the child announces is kept here, in
 * arrival order. Requests go through `send` from `servers.ts`, with the extra steering headers.
 */
import { type ChildProcess, fork } from "node:child_process";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { type Reply, type Send, send } from "./servers.js";

const SERVER = fileURLToPath(new URL("./fault-server.mjs", import.meta.url));

export interface FaultServerConfig {
  store: "redis" | "redis-cluster" | "sqlite";
  ledgerPath: string;
  redisUrl?: string;
  /** For `store: "redis-cluster"`: the seed nodes, as `host:port`. */
  redisCluster?: string[];
  sqlitePath?: string;
  busyTimeoutMs?: number;
  leaseMs?: number;
  ttlMs?: number;
  storeTimeoutMs?: number;
}

/** An engine event as the child reports it: the `IdempotencyEvent` fields, `error` as its message. */
export interface ReportedEvent {
  type: string;
  key: string;
  at: number;
  elapsedMs: number;
  operation?: string;
  takeover?: boolean;
  status?: number | null;
  error?: string;
}

/** The hashed identity the engine gives a request of `tenant` with `key` to POST /orders (its events' `key`). */
export function identityOf(key: string, tenant = "anonymous"): string {
  const hash = createHash("sha256");
  for (const part of [tenant, "POST", "/orders", key]) {
    hash.update(`${Buffer.byteLength(part)}:`);
    hash.update(part);
  }
  return hash.digest("hex");
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

type Message =
  | { type: "listening"; port: number }
  | { type: "event"; event: ReportedEvent }
  | { type: "started"; key: string; execution: string };

export class FaultServer {
  stderr = "";
  readonly events: ReportedEvent[] = [];
  readonly started: Array<{ key: string; execution: string }> = [];
  readonly exited: Promise<void>;
  readonly #waiters = new Set<() => void>();

  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly name: string,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once("exit", () => resolve());
    });
    child.on("message", (message: Message) => {
      if (message.type === "event") this.events.push(message.event);
      if (message.type === "started") this.started.push({ key: message.key, execution: message.execution });
      for (const wake of this.#waiters) wake();
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  static async start(config: FaultServerConfig, name: string): Promise<FaultServer> {
    const child = fork(SERVER, [JSON.stringify(config)], { stdio: ["ignore", "ignore", "pipe", "ipc"] });
    running.add(child);
    child.once("exit", () => running.delete(child));
    let stderr = "";
    const collect = (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    };
    child.stderr?.on("data", collect);
    const port = await new Promise<number>((resolve, reject) => {
      const onMessage = (message: Message) => {
        if (message.type !== "listening") return;
        child.off("message", onMessage);
        resolve(message.port);
      };
      child.on("message", onMessage);
      child.once("exit", (code, signal) =>
        reject(new Error(`${name} exited (code ${code}, signal ${signal}) before listening:\n${stderr}`)),
      );
    });
    const server = new FaultServer(child, port, name);
    child.stderr?.off("data", collect);
    server.stderr = stderr;
    child.stderr?.on("data", (chunk: Buffer) => {
      server.stderr += chunk.toString("utf8");
    });
    return server;
  }

  /** The events of one request key (of `tenant`), in order. */
  eventsOf(key: string, tenant = "anonymous"): ReportedEvent[] {
    const identity = identityOf(key, tenant);
    return this.events.filter((event) => event.key === identity);
  }

  /** Resolves once `condition` holds, re-checked on every message from the child; rejects after `ms`. */
  async until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
    if (condition()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`${this.name}: timed out after ${ms} ms waiting until ${what}\n${this.stderr}`));
      }, ms);
      const check = () => {
        if (!condition()) return;
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve();
      };
      this.#waiters.add(check);
    });
  }

  /** Lets the held (`x-hold: 1`) handler of `key` answer. */
  release(key: string): void {
    this.child.send({ type: "release", key });
  }

  /** SIGSTOP: the whole process freezes, timers and all, as in a long GC pause or a suspended VM. */
  freeze(): void {
    this.child.kill("SIGSTOP");
  }

  thaw(): void {
    this.child.kill("SIGCONT");
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGCONT"); // a frozen child cannot read its exit message
    this.child.send({ type: "exit" });
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** `send` from `servers.ts` plus fault-server.mjs's own steering header, `x-block-ms`. */
export interface Steer extends Send {
  blockMs?: number;
}

/** One POST /orders over loopback, as `send` does, with the steering headers of fault-server.mjs. */
export function post(options: Steer): Promise<Reply> {
  const { blockMs, ...rest } = options;
  if (blockMs === undefined) return send(rest);
  return send({ ...rest, headers: { ...rest.headers, "x-block-ms": String(blockMs) } });
}
