/**
 * Private redis-server processes for the tests: each test file starts its own on free loopback ports, with
 * no persistence and a temporary directory, and kills them afterwards. The shared Redis on 6379 is never
 * touched. A missing `redis-server` fails the file with instructions; it is never skipped.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Cluster, Redis, type RedisOptions } from "ioredis";

const run = promisify(execFile);

const MISSING =
  "redis-server was not found on PATH. These tests start their own Redis servers: install it " +
  "(`apt-get install -y redis-server`, `brew install redis`), or set REDIS_URL for the single-node suites.";

/** Whether `port` (and the cluster bus port, port + 10000, when asked) can be bound on loopback now. */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

async function freePort(withBusPort: boolean): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 25_000);
    if ((await canBind(port)) && (!withBusPort || (await canBind(port + 10_000)))) return port;
  }
  throw new Error("no free loopback port found for redis-server");
}

/** Every server still running, killed when the test process exits however it ends (no orphans). */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** One redis-server process on 127.0.0.1. */
export class RedisServer {
  readonly port: number;
  readonly process: ChildProcess;
  readonly #exited: Promise<void>;

  private constructor(port: number, child: ChildProcess) {
    this.port = port;
    this.process = child;
    this.#exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts a server in `dir` and resolves once it accepts connections. */
  static async start(dir: string, options: { cluster?: boolean; port?: number } = {}): Promise<RedisServer> {
    const port = options.port ?? (await freePort(options.cluster === true));
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    args.push("--dir", dir, "--dbfilename", `dump-${port}.rdb`, "--protected-mode", "no");
    if (options.cluster) {
      args.push("--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`));
      args.push("--cluster-node-timeout", "5000");
    }
    const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    running.add(child);
    child.once("exit", () => running.delete(child));
    const server = new RedisServer(port, child);
    await new Promise<void>((resolve, reject) => {
      let output = "";
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("Ready to accept connections")) {
          child.stdout?.off("data", onData);
          resolve();
        }
      };
      child.stdout?.on("data", onData);
      child.once("error", (error: NodeJS.ErrnoException) =>
        reject(error.code === "ENOENT" ? new Error(MISSING) : error),
      );
      child.once("exit", (code) =>
        reject(new Error(`redis-server exited with ${code} on port ${port}:\n${output}`)),
      );
    });
    child.stdout?.resume();
    child.stderr?.resume();
    return server;
  }

  /** SIGSTOP: the server keeps its connections open but answers nothing, like a hung host. */
  pause(): void {
    this.process.kill("SIGSTOP");
  }

  resume(): void {
    this.process.kill("SIGCONT");
  }

  /** Kills the process (also when paused) and waits until it is gone. */
  async kill(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill("SIGKILL");
    await this.#exited;
  }
}

/** A temporary directory for server files, removed by the returned function. */
export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), "idempotency-redis-"));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * Connection errors are expected while a test takes a server down; the store reports them as
 * `IdempotencyStoreError`s, so the client's own "error" events only need a listener (as in any app).
 */
export function quiet<T extends Redis | Cluster>(client: T): T {
  client.on("error", () => undefined);
  return client;
}

/** Client settings every test connection uses: fail fast instead of retrying a command for long. */
export const clientOptions: RedisOptions = { maxRetriesPerRequest: 1, lazyConnect: false };

/**
 * A single-node Redis for a test file: `REDIS_URL` when set (and allowed), otherwise a private server.
 * `clients()` hands out tracked connections that `stop()` closes.
 */
export async function startSingle(options: { honourRedisUrl: boolean }): Promise<{
  url: string;
  server: RedisServer | undefined;
  client(extra?: RedisOptions): Redis;
  stop(): Promise<void>;
}> {
  const external = options.honourRedisUrl ? process.env.REDIS_URL : undefined;
  const dir = external ? undefined : tempDir();
  const server = dir ? await RedisServer.start(dir.path) : undefined;
  const url = external ?? (server as RedisServer).url;
  const clients: Redis[] = [];
  return {
    url,
    server,
    client(extra = {}) {
      const client = quiet(new Redis(url, { ...clientOptions, ...extra }));
      clients.push(client);
      return client;
    },
    async stop() {
      clients.forEach((client) => void client.disconnect());
      await server?.kill();
      dir?.remove();
    },
  };
}

/**
 * A 3-master Redis Cluster on loopback: three `--cluster-enabled` servers joined by
 * `redis-cli --cluster create`, ready once every node reports `cluster_state:ok`.
 */
export async function startCluster(): Promise<{
  servers: RedisServer[];
  client(): Cluster;
  stop(): Promise<void>;
}> {
  const dir = tempDir();
  const servers: RedisServer[] = [];
  const clients: Cluster[] = [];
  const stop = async () => {
    clients.forEach((client) => void client.disconnect());
    await Promise.all(servers.map((server) => server.kill()));
    dir.remove();
  };
  try {
    for (let i = 0; i < 3; i++) servers.push(await RedisServer.start(dir.path, { cluster: true }));
    const addresses = servers.map((server) => `127.0.0.1:${server.port}`);
    await run("redis-cli", ["--cluster", "create", ...addresses, "--cluster-replicas", "0", "--cluster-yes"]);
    await waitForClusterOk(servers);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    servers,
    client() {
      const client = quiet(
        new Cluster(
          servers.map((server) => ({ host: "127.0.0.1", port: server.port })),
          { redisOptions: { maxRetriesPerRequest: 1 } },
        ),
      );
      clients.push(client);
      return client;
    },
    stop,
  };
}

async function waitForClusterOk(servers: RedisServer[]): Promise<void> {
  const probes = servers.map((server) => new Redis(server.port, "127.0.0.1", clientOptions));
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const infos = await Promise.all(probes.map((probe) => probe.cluster("INFO")));
      if (infos.every((info) => info.includes("cluster_state:ok"))) return;
      if (Date.now() > deadline)
        throw new Error(`the cluster did not reach cluster_state:ok:\n${infos.join("\n")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    probes.forEach((probe) => void probe.disconnect());
  }
}
