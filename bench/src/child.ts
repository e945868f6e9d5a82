/** Starts a benchmark server (src/server.ts) in a child process and stops it. */
import { type ChildProcess, fork } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { frameworkOf, type ServerConfig, targetName } from "./config.js";

export interface RunningServer {
  /** The server's process id (valgrind's own, when it runs under valgrind). */
  pid: number;
  port: number;
  url: string;
  stop(): Promise<void>;
}

const SERVER_ENTRIES = {
  express: new URL("./server.ts", import.meta.url),
  fastify: new URL("./server-fastify.ts", import.meta.url),
  hono: new URL("./server-hono.ts", import.meta.url),
  koa: new URL("./server-koa.ts", import.meta.url),
};

/** Every child still running, killed if the parent exits early (an uncaught error), so none is orphaned. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

let sqliteFiles = 0;

/** A fresh SQLite database path in `dir` for one run; the files are removed when that server stops. */
export function freshSqlitePath(dir: string): string {
  sqliteFiles += 1;
  return join(dir, `bench-${sqliteFiles}.db`);
}

/**
 * Starts one server; `nodeOptions` go to its Node.js process (for example `--cpu-prof`). `wrapper` runs Node
 * under another program: `["valgrind", "--tool=callgrind", …]` starts `valgrind --tool=callgrind … node …`.
 */
export async function startServer(
  config: ServerConfig,
  nodeOptions: string[] = [],
  wrapper: string[] = [],
): Promise<RunningServer> {
  const [wrapperPath, ...wrapperArgs] = wrapper;
  // tsx's loader only: the tsx CLI's preflight (in this process's execArgv) would relay the child's SIGTERM
  // to the CLI, which then ends this process too.
  const child = fork(SERVER_ENTRIES[frameworkOf(config.library)], [], {
    ...(wrapperPath ? { execPath: wrapperPath } : {}),
    execArgv: [
      ...(wrapperPath ? [...wrapperArgs, process.execPath] : []),
      ...nodeOptions,
      "--import",
      import.meta.resolve("tsx"),
    ],
    env: { ...process.env, BENCH_SERVER: JSON.stringify(config), NODE_ENV: "production" },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("exit", () => running.delete(child));
  const port = await new Promise<number>((resolve, reject) => {
    child.once("message", (message) => resolve((message as { port: number }).port));
    child.once("error", reject);
    child.once("exit", (code, signal) =>
      reject(new Error(`the ${targetName(config)} server exited before listening (${code ?? signal})`)),
    );
  });
  return {
    pid: child.pid as number,
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      if (config.sqlitePath) {
        for (const suffix of ["", "-wal", "-shm"]) rmSync(`${config.sqlitePath}${suffix}`, { force: true });
      }
    },
  };
}
