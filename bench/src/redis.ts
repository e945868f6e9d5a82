/**
 * The Redis the Redis rows use: `REDIS_URL` when set, otherwise a private `redis-server` on a free loopback
 * port with no persistence, killed at the end. Between runs only the benchmark's own keys are deleted, so a
 * shared server keeps everything else.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { Redis } from "ioredis";
import { REDIS_CLEANUP_PATTERN } from "./config.js";

export interface BenchRedis {
  url: string;
  /** A client for the benchmark's own reads (INFO, cleanup), not the servers'. */
  admin: Redis;
  /** "private redis-server 7.0.15 on 127.0.0.1:PORT" or "REDIS_URL (redis 7.0.15)". */
  description: string;
  /** Deletes every key the benchmark wrote. */
  clean(): Promise<void>;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function startPrivateServer(): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  process.once("exit", () => child.kill("SIGKILL"));
  await new Promise<void>((resolve, reject) => {
    let output = "";
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Ready to accept connections")) {
        child.stdout?.off("data", onData);
        child.stdout?.resume();
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.resume();
    child.once("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "ENOENT"
          ? new Error(
              "redis-server is not on PATH: install it, set REDIS_URL, or pass --stores=memory,sqlite",
            )
          : error,
      ),
    );
    child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${output}`)));
  });
  return { port, child };
}

export async function startRedis(): Promise<BenchRedis> {
  const external = process.env.REDIS_URL;
  const started = external ? undefined : await startPrivateServer();
  const url = external ?? `redis://127.0.0.1:${started?.port}`;
  const admin = new Redis(url, { maxRetriesPerRequest: 1 });
  const info = await admin.info("server");
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
  return {
    url,
    admin,
    description: external
      ? `REDIS_URL (redis ${version})`
      : `private redis-server ${version} on 127.0.0.1, no persistence`,
    async clean() {
      let cursor = "0";
      do {
        const [next, keys] = await admin.scan(cursor, "MATCH", REDIS_CLEANUP_PATTERN, "COUNT", 1000);
        if (keys.length > 0) await admin.unlink(...keys);
        cursor = next;
      } while (cursor !== "0");
    },
    async stop() {
      await admin.quit();
      if (started) {
        const exited = new Promise((resolve) => started.child.once("exit", resolve));
        started.child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
