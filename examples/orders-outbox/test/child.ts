// A child process for the crash tests, run with tsx. It prints what it reached on stdout (synchronous for a
// pipe on Linux) and, at the crash point the parent chose, kills itself with SIGKILL: no cleanup runs.
//
//   tsx child.ts server <prefix> [crash-after-write]   prints "listening <port>", then "wrote <key>" per order
//   tsx child.ts relay <prefix> <stream>                one relay round, killed after publishing, before COMMIT
//   tsx child.ts consumer <prefix> <stream> <group> <name>   one poll, killed after the work, before XACK
import { createIdempotency } from "@idempotency/core";
import { PostgresStore } from "@idempotency/postgres";
import { Redis } from "ioredis";
import pg from "pg";
import { createApp } from "../src/app.js";
import { Consumer } from "../src/consumer.js";
import { relayOnce } from "../src/relay.js";
import { tables } from "../src/schema.js";

const [mode, prefix, ...rest] = process.argv.slice(2);
const names = tables(prefix);
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
pool.on("error", () => undefined);
const say = (line: string) => process.stdout.write(`${line}\n`);
const die = () => process.kill(process.pid, "SIGKILL");

if (mode === "server") {
  const crash = rest[0] === "crash-after-write";
  const app = createApp({
    pool,
    tables: names,
    afterWrite: (key) => {
      say(`wrote ${key}`);
      if (crash) die();
    },
  });
  const server = app.listen(0, "127.0.0.1", () => {
    const address = server.address();
    say(`listening ${typeof address === "object" && address ? address.port : 0}`);
  });
} else {
  const redis = new Redis(process.env.REDIS_URL as string, { maxRetriesPerRequest: 1 });
  if (mode === "relay") {
    await relayOnce({
      pool,
      redis,
      tables: names,
      stream: rest[0] as string,
      afterPublish: (ids) => {
        say(`published ${ids.join(",")}`);
        die();
      },
    });
  } else if (mode === "consumer") {
    const [stream, group, name] = rest as [string, string, string];
    const idempotency = createIdempotency({
      store: new PostgresStore({ pool, table: names.records }),
      scope: "global",
    });
    const consumer = new Consumer({
      redis,
      idempotency,
      pool,
      tables: names,
      stream,
      group,
      name,
      afterWork: (outboxId) => {
        say(`worked ${outboxId}`);
        die();
      },
    });
    await consumer.poll(1, 2_000);
  }
  say("nothing to do");
  process.exit(0);
}
