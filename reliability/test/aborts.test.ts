/**
 * Client aborts: clients that close their connection at each point of a request, on every binding (each in
 * its own server process on one Redis), then retry with the whole request:
 *
 * - **mid-body**: the head and part of the body, then the socket is destroyed → nothing runs, the server
 *   answers 400 request-aborted to nobody (no 5xx, nothing on its stderr), and the retry runs once;
 * - **after the body**: the whole request, then the socket is destroyed at once (before the middleware or a
 *   body parser got to it; `@koa/bodyparser` answers 499 to such a request) → the key's effect happens once,
 *   and every retry ends with that one execution's 201, never a replayed 499 or 400;
 * - **during the handler**: destroyed while the handler runs → the record is still completed, and the
 *   retries get 409 until the byte-exact replay;
 * - **during the response**: destroyed as the response head arrives → the retry replays it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ledger } from "./support/ledger.js";
import { SEED } from "./support/random.js";
import { startSingle } from "./support/redis.js";
import { report, tally } from "./support/report.js";
import { BINDINGS, type Reply, ServerProcess, send, sleep } from "./support/servers.js";

const KEYS_PER_CASE = 12;
/** Koa's `app.onerror` output for a connection whose request ended mid-body. */
const KOA_CONNECTION_ERROR =
  /\n {2}Error: Parse Error\n {6}at socketOnEnd \(node:_http_server:\d+:\d+\)\n(?: {6}at .*\n)*/g;
const HANDLER_MS = 300;

let dir: string;
let ledger: Ledger;
let redis: Awaited<ReturnType<typeof startSingle>>;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "idempotency-aborts-"));
  ledger = new Ledger(join(dir, "ledger.db"));
  redis = await startSingle({ honourRedisUrl: false });
});
afterAll(async () => {
  ledger?.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const orderBody = (key: string) => JSON.stringify({ key, amount: 100, note: "x".repeat(200) });

/** Sends the head and `sentBytes` of the body over a raw socket, waits `holdMs`, then destroys the socket. */
async function leaveMidBody(port: number, key: string, sentBytes: number, holdMs: number): Promise<void> {
  const body = orderBody(key);
  const socket = connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  socket.write(
    `POST /orders HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nIdempotency-Key: ${key}\r\n\r\n${body.slice(0, sentBytes)}`,
  );
  await sleep(holdMs);
  await new Promise<void>((resolve) => {
    socket.once("close", () => resolve());
    socket.destroy();
  });
}

/** Sends the whole request, then destroys the connection: at once, on the response head, or when `leave` resolves. */
function sendAndLeave(
  port: number,
  key: string,
  leave: "after-body" | "on-response" | Promise<unknown>,
  handlerMs: number,
): Promise<void> {
  const body = Buffer.from(orderBody(key));
  return new Promise((resolve) => {
    const req = request({
      host: "127.0.0.1",
      port,
      method: "POST",
      path: "/orders",
      agent: false,
      headers: {
        "content-type": "application/json",
        "content-length": String(body.length),
        "idempotency-key": key,
        "x-handler-ms": String(handlerMs),
      },
    });
    req.on("error", () => {});
    req.once("close", () => resolve());
    if (leave === "on-response") req.once("response", () => req.destroy());
    else if (leave !== "after-body") void leave.then(() => req.destroy());
    req.end(body, () => {
      if (leave === "after-body") req.destroy();
    });
  });
}

/** Retries with the whole body until the answer is not a 409 in-progress; every answer is collected. */
async function retryUntilSettled(port: number, key: string, answers: Reply[]): Promise<Reply> {
  for (let attempt = 0; ; attempt++) {
    const reply = await send({ port, key, body: orderBody(key) });
    answers.push(reply);
    if (reply.status !== 409) return reply;
    if (attempt > 200) throw new Error(`${key}: still 409 after ${attempt} retries`);
    await sleep(Math.min(100, 10 * 2 ** attempt));
  }
}

/** Waits until the ledger shows `n` executions of `key` (the handler has started). */
async function executions(key: string, n: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (ledger.of(key).length < n) {
    if (Date.now() > deadline) throw new Error(`${key}: the handler never ran`);
    await sleep(5);
  }
}

describe("clients that leave at each point of a request, then retry with the whole request", () => {
  const servers: ServerProcess[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
  });

  it.each(BINDINGS)(
    "%s: mid-body runs nothing and frees the key; after the body, in the handler or the response: one execution, then its replay",
    async (binding) => {
      const server = await ServerProcess.start({
        binding,
        store: "redis",
        redisUrl: redis.url,
        ledgerPath: ledger.path,
      });
      servers.push(server);
      const answers: Reply[] = [];
      const keysOf = (point: string) =>
        Array.from({ length: KEYS_PER_CASE }, (_, i) => `${binding}-${point}-${i}-${SEED}`);

      // Mid-body: from the first byte of the body to all but its last byte.
      const midBody = keysOf("mid-body");
      await Promise.all(
        midBody.map((key, i) =>
          leaveMidBody(server.port, key, Math.floor((i * 230) / KEYS_PER_CASE), 20 + (i % 4) * 10),
        ),
      );
      for (const key of midBody) expect(ledger.of(key)).toEqual([]);
      for (const key of midBody) {
        const first = await send({ port: server.port, key, body: orderBody(key) });
        answers.push(first);
        expect(first.status).toBe(201);
        expect(first.headers["idempotent-replayed"]).toBeUndefined();
        const replay = await send({ port: server.port, key, body: orderBody(key) });
        answers.push(replay);
        expect(replay.status).toBe(201);
        expect(replay.headers["idempotent-replayed"]).toBe("true");
        expect(replay.body.equals(first.body)).toBe(true);
        expect(ledger.of(key)).toHaveLength(1);
      }

      // After the body, before anything answered (a body parser may find the connection already closed).
      const afterBody = keysOf("after-body");
      await Promise.all(afterBody.map((key) => sendAndLeave(server.port, key, "after-body", 0)));
      // During the handler: the client leaves once the handler has started.
      const inHandler = keysOf("in-handler");
      await Promise.all(
        inHandler.map((key) => sendAndLeave(server.port, key, executions(key, 1), HANDLER_MS)),
      );
      // During the response: the head arrives, the client leaves without reading the body.
      const inResponse = keysOf("in-response");
      await Promise.all(inResponse.map((key) => sendAndLeave(server.port, key, "on-response", 0)));

      let afterBodyReplayed = 0;
      for (const key of [...afterBody, ...inHandler, ...inResponse]) {
        const settled = await retryUntilSettled(server.port, key, answers);
        if (afterBody.includes(key) && settled.headers["idempotent-replayed"] === "true") afterBodyReplayed++;
        const rows = ledger.of(key);
        expect(rows, `${key} ran ${rows.length} times`).toHaveLength(1);
        expect(settled.status).toBe(201);
        expect(settled.body.toString("utf8")).toBe(rows[0]?.body);
        const again = await send({ port: server.port, key, body: orderBody(key) });
        answers.push(again);
        expect(again.status).toBe(201);
        expect(again.headers["idempotent-replayed"]).toBe("true");
        expect(again.body.equals(settled.body)).toBe(true);
        if (!afterBody.includes(key)) expect(settled.headers["idempotent-replayed"]).toBe("true");
      }
      // An aborted upload is a client-side 400, never a server fault: nothing reached an error handler.
      // Koa's default error listener logs the connection's own error (Node's HTTP parser at the socket's early
      // end) for every client that left mid-body, with or without this middleware: those blocks are Koa's,
      // not ours. Anything else on stderr fails.
      const connectionErrors = server.stderr.match(KOA_CONNECTION_ERROR) ?? [];
      expect(binding === "koa" || connectionErrors.length === 0).toBe(true);
      expect(server.stderr.replace(KOA_CONNECTION_ERROR, "").trim()).toBe("");
      expect(answers.filter((answer) => answer.status >= 500)).toEqual([]);

      const keys = [...midBody, ...afterBody, ...inHandler, ...inResponse];
      const executed = keys.reduce((n, key) => n + ledger.of(key).length, 0);
      report(
        `aborts ${binding}`,
        `${keys.length} clients left (${KEYS_PER_CASE} each mid-body, after the body, in the handler, in the response), ` +
          `${answers.length} retries answered ${tally(answers.map((answer) => answer.status))}; ` +
          `${executed} executions for ${keys.length} keys (mid-body: none before the retry; after the body: ${afterBodyReplayed} ran for the client that left and were replayed, ` +
          `${KEYS_PER_CASE - afterBodyReplayed} ran first for the retry), ` +
          (connectionErrors.length > 0
            ? `stderr: only Koa's log of ${connectionErrors.length} connections' own parse errors`
            : "server stderr empty"),
        {
          requests: keys.length + answers.length,
          faults: keys.length,
          executions: executed,
          records: keys.length,
          fiveXx: 0,
        },
      );
    },
  );
});
