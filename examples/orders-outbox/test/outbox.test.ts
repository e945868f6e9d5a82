import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createServer as createNetServer } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createIdempotency } from "@idempotency/core";
import { PostgresStore } from "@idempotency/postgres";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Consumer } from "../src/consumer.js";
import { relayOnce } from "../src/relay.js";
import { createSchema, dropSchema, type Tables, tables } from "../src/schema.js";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const CHILD = fileURLToPath(new URL("./child.ts", import.meta.url));
const EXAMPLE = fileURLToPath(new URL("..", import.meta.url));

/** A free loopback port, for the private redis-server. */
async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A child process on test/child.ts, its stdout read line by line. */
class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = "";
  readonly #lines: string[] = [];
  readonly #waiting: Array<(line: string) => void> = [];

  constructor(args: string[], redisUrl: string) {
    // tsx as a loader of this very process (not its CLI, which would wrap it): SIGKILL reaches the child itself.
    this.process = spawn(process.execPath, ["--import", "tsx", CHILD, ...args], {
      cwd: EXAMPLE,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DATABASE_URL, REDIS_URL: redisUrl },
    });
    this.process.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    createInterface({ input: this.process.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(line);
      else this.#lines.push(line);
    });
    this.exited = new Promise((resolve) =>
      this.process.on("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  next(): Promise<string> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return Promise.race([
      new Promise<string>((resolve) => this.#waiting.push(resolve)),
      this.exited.then(({ code, signal }) => {
        throw new Error(`child exited (${code ?? signal}) before answering:\n${this.stderr}`);
      }),
    ]);
  }
}

describe("orders-outbox", () => {
  const prefix = `outbox_${randomBytes(4).toString("hex")}`;
  const names: Tables = tables(prefix);
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 });
  pool.on("error", () => undefined);
  let redisServer: ChildProcess;
  let redisUrl: string;
  let redis: Redis;
  const children: Child[] = [];
  const child = (...args: string[]) => {
    const started = new Child(args, redisUrl);
    children.push(started);
    return started;
  };

  beforeAll(async () => {
    const port = await freePort();
    redisServer = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    // Connect only once it says it listens: a client racing its start-up exhausts its retries on a loaded machine.
    await new Promise<void>((resolve, reject) => {
      let output = "";
      redisServer.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString("utf8");
        if (output.includes("Ready to accept connections")) resolve();
      });
      redisServer.once("error", (error) =>
        reject(
          new Error(
            `redis-server could not start (${error.message}): install redis-server to run this example's tests.`,
          ),
        ),
      );
      redisServer.once("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${output}`)));
    });
    redisUrl = `redis://127.0.0.1:${port}`;
    redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    redis.on("error", () => undefined);
    await redis.ping();
    await createSchema(pool, names);
  }, 30_000);

  afterAll(async () => {
    for (const started of children) started.process.kill("SIGKILL");
    redis?.disconnect();
    redisServer?.kill("SIGKILL");
    await dropSchema(pool, names);
    await pool.end();
  });

  const count = async (table: string, where = "TRUE", values: unknown[] = []) =>
    Number((await pool.query(`SELECT count(*) AS n FROM ${table} WHERE ${where}`, values)).rows[0].n);

  async function startServer(...extra: string[]): Promise<{ url: string; server: Child }> {
    const server = child("server", prefix, ...extra);
    const line = await server.next();
    expect(line).toMatch(/^listening \d+$/);
    return { url: `http://127.0.0.1:${line.split(" ")[1]}`, server };
  }

  function order(url: string, key: string | undefined, body: unknown, token = "acme-token") {
    return fetch(`${url}/orders`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        ...(key === undefined ? {} : { "idempotency-key": key }),
      },
      body: JSON.stringify(body),
    });
  }

  function consumer(name: string, stream: string, group: string): Consumer {
    const idempotency = createIdempotency({
      store: new PostgresStore({ pool, table: names.records }),
      scope: "global",
    });
    return new Consumer({ redis, idempotency, pool, tables: names, stream, group, name });
  }

  it("answers the HTTP contract: 201, the byte-exact replay, 422 for another body, 400 without a key, 401", async () => {
    const { url } = await startServer();
    const key = `order-${randomUUID()}`;
    const first = await order(url, key, { item: "book", quantity: 1 });
    const firstBody = await first.text();
    const replay = await order(url, key, { item: "book", quantity: 1 });
    const other = await order(url, key, { item: "lamp", quantity: 2 });
    const keyless = await order(url, undefined, { item: "book", quantity: 1 });
    const anonymous = await fetch(`${url}/orders`, { method: "POST" });
    expect(first.status).toBe(201);
    expect(replay.status).toBe(201);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(firstBody);
    expect(other.status).toBe(422);
    expect(keyless.status).toBe(400);
    expect(anonymous.status).toBe(401);
    const orderId = (JSON.parse(firstBody) as { id: number }).id;
    expect(await count(names.orders, "id = $1", [orderId])).toBe(1);
    expect(await count(names.outbox, "(payload->>'orderId')::bigint = $1", [orderId])).toBe(1);
  });

  it("a server killed after writing the order, before COMMIT: nothing is left, the retry writes exactly one order and one event", async () => {
    const { url } = await startServer("crash-after-write");
    const key = `crash-${randomUUID()}`;
    const crashed = child("server", prefix); // the replacement, started now so it is ready
    const replacement = `http://127.0.0.1:${(await crashed.next()).split(" ")[1]}`;
    const before = await count(names.orders);
    const lost = await order(url, key, { item: "crash-test", quantity: 7 }).catch((error: Error) => error);
    expect(lost).toBeInstanceOf(Error); // the connection died with the process
    expect(await count(names.orders)).toBe(before);
    const retried = await order(replacement, key, { item: "crash-test", quantity: 7 });
    expect(retried.status).toBe(201);
    const { id } = (await retried.json()) as { id: number };
    expect(await count(names.orders, "item = 'crash-test'")).toBe(1);
    expect(await count(names.outbox, "(payload->>'orderId')::bigint = $1", [id])).toBe(1);
  });

  it("a relay killed between XADD and COMMIT publishes the rows again; the consumers send one e-mail per row", async () => {
    const stream = `events-${randomUUID()}`;
    await pool.query(`UPDATE ${names.outbox} SET sent_at = now() WHERE sent_at IS NULL`);
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO ${names.outbox} (topic, payload) SELECT 'order-created', jsonb_build_object('n', n) FROM generate_series(1, 5) n RETURNING id`,
    );
    const ids = rows.map((row) => row.id);
    const relay = child("relay", prefix, stream);
    expect(await relay.next()).toBe(`published ${ids.join(",")}`);
    expect((await relay.exited).signal).toBe("SIGKILL");
    expect(await count(names.outbox, "id = ANY($1::bigint[]) AND sent_at IS NULL", [ids])).toBe(5);
    expect(await relayOnce({ pool, redis, tables: names, stream })).toBe(5);
    expect(await redis.xlen(stream)).toBe(10); // every row twice on the stream
    const a = consumer("a", stream, "mailers");
    const b = consumer("b", stream, "mailers");
    await a.ensureGroup();
    const deliveries = [...(await a.poll(6)), ...(await b.poll(6))];
    expect(deliveries).toHaveLength(10);
    expect(await count(names.emails, "outbox_id = ANY($1::bigint[])", [ids])).toBe(5);
    for (const id of ids) {
      const receipts = deliveries
        .filter((delivery) => delivery.outboxId === id)
        .map((delivery) => delivery.receipt);
      expect(receipts).toHaveLength(2);
      expect(receipts[1]).toEqual(receipts[0]); // the duplicate got the stored receipt
    }
    expect(((await redis.xpending(stream, "mailers")) as [number])[0]).toBe(0);
  });

  it("a consumer killed after the work, before XACK: another reclaims the message and returns the stored receipt", async () => {
    const stream = `events-${randomUUID()}`;
    const {
      rows: [row],
    } = await pool.query<{ id: string }>(
      `INSERT INTO ${names.outbox} (topic, payload, sent_at) VALUES ('order-created', '{}', now()) RETURNING id`,
    );
    const id = (row as { id: string }).id;
    await redis.xadd(stream, "*", "outboxId", id, "topic", "order-created", "payload", "{}");
    const survivor = consumer("survivor", stream, "mailers");
    await survivor.ensureGroup();
    const doomed = child("consumer", prefix, stream, "mailers", "doomed");
    expect(await doomed.next()).toBe(`worked ${id}`);
    expect((await doomed.exited).signal).toBe("SIGKILL");
    expect(((await redis.xpending(stream, "mailers")) as [number])[0]).toBe(1); // delivered, never acknowledged
    const reclaimed = await survivor.reclaim(0);
    expect(reclaimed.map((delivery) => delivery.receipt)).toEqual([{ outboxId: id, sentBy: "doomed" }]);
    expect(await count(names.emails, "outbox_id = $1", [id])).toBe(1);
    expect(((await redis.xpending(stream, "mailers")) as [number])[0]).toBe(0);
  });

  it("end to end: orders with retries through the API, the relay, two consumers: one order, one event, one e-mail per key", async () => {
    const stream = `events-${randomUUID()}`;
    await pool.query(`UPDATE ${names.outbox} SET sent_at = now() WHERE sent_at IS NULL`);
    const { url } = await startServer();
    const keys = Array.from({ length: 20 }, (_, i) => `e2e-${i}-${randomUUID()}`);
    // Every key three times, two of them at once: first executions, concurrent duplicates, retries.
    const answers = await Promise.all(
      keys.flatMap((key, i) => [0, 1, 2].map(() => order(url, key, { item: `e2e-${i}`, quantity: i + 1 }))),
    );
    const statuses = answers.map((answer) => answer.status);
    expect(statuses.every((status) => status === 201 || status === 409)).toBe(true);
    // Retry the 409s, as a client would, until each key has its answer.
    for (const key of keys) {
      const i = keys.indexOf(key);
      expect((await order(url, key, { item: `e2e-${i}`, quantity: i + 1 })).status).toBe(201);
    }
    expect(await count(names.orders, "item LIKE 'e2e-%'")).toBe(20);
    expect(await relayOnce({ pool, redis, tables: names, stream })).toBe(20);
    const a = consumer("a", stream, "mailers");
    const b = consumer("b", stream, "mailers");
    await a.ensureGroup();
    const deliveries = [...(await a.poll(10)), ...(await b.poll(10)), ...(await a.poll(10))];
    expect(deliveries).toHaveLength(20);
    expect(
      await count(
        names.emails,
        `outbox_id IN (SELECT id FROM ${names.outbox} WHERE payload->>'item' LIKE 'e2e-%')`,
      ),
    ).toBe(20);
    expect(((await redis.xpending(stream, "mailers")) as [number])[0]).toBe(0);
  });
});
