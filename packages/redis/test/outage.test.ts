import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import {
  createIdempotency,
  type Idempotency,
  type IdempotencyEvent,
  IdempotencyStoreError,
  PROBLEM_TYPES,
} from "@idempotency/core";
import { Redis, type RedisOptions } from "ioredis";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { RedisStore } from "../src/index.js";
import { type ClientResponse, type HandlerReply, send } from "./support/engine.js";
import { quiet, RedisServer, tempDir } from "./support/redis-server.js";

// Every test gets its own server: they pause, kill and restart it.
const dir = tempDir();
let server: RedisServer;
const clients: Redis[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.disconnect();
  await server?.kill();
});
afterAll(() => dir.remove());

const TIMEOUT_MS = 500;
/** How far past the store timeout a request may finish before it counts as hanging: generous, CI is shared. */
const HANG_SLACK_MS = 5_000;

const created: HandlerReply = {
  status: 201,
  headers: { "content-type": "application/json" },
  body: '{"ok":true}',
};

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(condition: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

function clientFor(options: RedisOptions = {}): Redis {
  const client = quiet(new Redis(server.port, "127.0.0.1", { maxRetriesPerRequest: 1, ...options }));
  clients.push(client);
  return client;
}

const claimArgs = () => ({
  token: randomUUID(),
  fingerprint: "xxh3-128:00",
  leaseMs: 60_000,
  ttlMs: 120_000,
  allowTakeover: false,
});

/** Settles `promise` or gives up after `ms`, without leaving a rejection unhandled. */
async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<"settled" | "pending"> {
  promise.catch(() => undefined);
  return Promise.race([
    promise.then(
      () => "settled" as const,
      () => "settled" as const,
    ),
    sleep(ms).then(() => "pending" as const),
  ]);
}

describe("a store call that timed out never applies later", () => {
  it("a begin against a paused server fails after timeoutMs, and does not apply when the server resumes", async () => {
    server = await RedisServer.start(dir.path);
    const client = clientFor();
    const store = new RedisStore({ client, timeoutMs: TIMEOUT_MS });
    expect(await store.get(randomUUID())).toBeNull(); // the first call learns the server clock
    const key = randomUUID();
    const control = `control:${randomUUID()}`;

    server.pause();
    let error: unknown;
    let elapsed: number;
    let plainWrite: Promise<unknown>;
    try {
      const started = performance.now();
      error = await store.begin(key, claimArgs()).then(
        () => undefined,
        (rejection: unknown) => rejection,
      );
      elapsed = performance.now() - started;
      // A plain command sent meanwhile, by contrast, sits in the socket and applies once the server resumes.
      plainWrite = client.set(control, "applied late");
      expect(await settledWithin(plainWrite, 100)).toBe("pending");
    } finally {
      server.resume();
    }

    expect(error).toBeInstanceOf(IdempotencyStoreError);
    expect((error as Error).message).toBe(
      `RedisStore begin failed: Redis did not answer within ${TIMEOUT_MS} ms; ` +
        "the command will not apply if it reaches Redis later.",
    );
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(elapsed).toBeLessThan(TIMEOUT_MS + HANG_SLACK_MS);

    expect(await plainWrite).toBe("OK");
    expect(await client.get(control)).toBe("applied late");
    // The begin reached Redis before this get (one connection, in order) and was refused by its deadline.
    expect(await client.exists(store.keyOf(key))).toBe(0);
    expect(await store.get(key)).toBeNull();
    expect(await store.begin(key, claimArgs())).toEqual({ state: "claimed", takeover: false });
  });

  it("a begin held in ioredis' offline queue while the server is down does not apply when it comes back", async () => {
    server = await RedisServer.start(dir.path);
    const port = server.port;
    // The most permissive settings: queue while disconnected, wait for the connection forever.
    const client = clientFor({ maxRetriesPerRequest: null, retryStrategy: () => 50 });
    const store = new RedisStore({ client, timeoutMs: TIMEOUT_MS });
    expect(await store.get(randomUUID())).toBeNull();
    const key = randomUUID();
    const control = `control:${randomUUID()}`;

    await server.kill();
    await until(() => client.status !== "ready", "the client noticed the server is gone");
    const error = await store.begin(key, claimArgs()).then(
      () => undefined,
      (rejection: unknown) => rejection,
    );
    expect(error).toBeInstanceOf(IdempotencyStoreError);
    expect((error as Error).message).toContain(`did not answer within ${TIMEOUT_MS} ms`);
    const plainWrite = client.set(control, "applied late");

    server = await RedisServer.start(dir.path, { port });
    expect(await plainWrite).toBe("OK"); // the offline queue was flushed to the new server
    // The queued begin went first: EVALSHA, NOSCRIPT on the fresh server, then EVAL, refused by its deadline.
    expect(await store.get(key)).toBeNull();
    expect(await client.exists(store.keyOf(key))).toBe(0);
    expect(await client.get(control)).toBe("applied late");
    expect(await store.begin(key, claimArgs())).toEqual({ state: "claimed", takeover: false });
  });
});

interface LoadRecord {
  key: string;
  response: ClientResponse;
  ms: number;
  /** Whether the request started after the store was back (one that started before may finish after). */
  startedAfterRestore: boolean;
}

/**
 * Requests on fresh keys from `workers` loops; a key that got 503 is retried (as a client would) until it
 * runs. `disrupt` takes the store down once enough requests succeeded; `restore` brings it back once enough
 * were refused; the load stops when enough succeeded after the restore and no retry is pending.
 */
async function underLoad(
  idempotency: Idempotency,
  disrupt: () => Promise<void> | void,
  restore: () => Promise<void> | void,
): Promise<{ records: LoadRecord[]; executions: Map<string, number> }> {
  const records: LoadRecord[] = [];
  let restored = false;
  const executions = new Map<string, number>();
  const retries: string[] = [];
  let stop = false;
  const worker = async () => {
    while (!stop) {
      const key = retries.shift() ?? randomUUID();
      const startedAfterRestore = restored;
      const started = performance.now();
      const response = await send(idempotency, { key }, () => {
        executions.set(key, (executions.get(key) ?? 0) + 1);
        return created;
      });
      records.push({ key, response, ms: performance.now() - started, startedAfterRestore });
      if (response.status === 503) {
        retries.push(key);
        await sleep(20);
      }
    }
  };
  const workers = Array.from({ length: 6 }, worker);
  const count = (from: number, status: number) =>
    records.slice(from).filter((r) => r.response.status === status).length;

  await until(() => count(0, 201) >= 20, "20 requests ran before the outage");
  const disruptedAt = records.length;
  await disrupt();
  await until(() => count(disruptedAt, 503) >= 12, "12 requests were refused during the outage");
  await restore();
  restored = true;
  const ranAfterRestore = () => records.filter((r) => r.startedAfterRestore && r.response.status === 201);
  await until(
    () => ranAfterRestore().length >= 30 && retries.length === 0,
    "30 requests ran after the recovery and every refused key ran on retry",
  );
  stop = true;
  await Promise.all(workers);
  return { records, executions };
}

/** Every request that started after the recovery and ran replays its stored response, without running again. */
async function expectReplaysAfterRecovery(
  idempotency: Idempotency,
  { records, executions }: Awaited<ReturnType<typeof underLoad>>,
): Promise<void> {
  const ran = records.filter((r) => r.startedAfterRestore && r.response.status === 201);
  expect(ran.length).toBeGreaterThanOrEqual(30);
  for (const { key } of ran) {
    const replay = await send(idempotency, { key }, () => created);
    expect(replay).toMatchObject({ status: 201, body: created.body, executed: false });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(executions.get(key)).toBe(1);
  }
}

function expectFailClosed({ records, executions }: Awaited<ReturnType<typeof underLoad>>): void {
  for (const { response, ms } of records) {
    expect(ms, "no request hangs beyond the store timeout").toBeLessThan(TIMEOUT_MS * 2 + HANG_SLACK_MS);
    if (response.status === 201) {
      expect(response.executed).toBe(true);
      continue;
    }
    // Only 503 otherwise: no 409 from a claim that applied after its caller gave up.
    expect(response.status).toBe(503);
    expect(response.executed).toBe(false);
    expect(response.headers["content-type"]).toBe("application/problem+json");
    expect(Number(response.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(response.body).type).toBe(PROBLEM_TYPES.storeUnavailable);
  }
  for (const [key, runs] of executions) expect(runs, `executions of ${key}`).toBe(1);
  const refused = new Set(records.filter((r) => r.response.status === 503).map((r) => r.key));
  for (const key of refused) expect(executions.get(key), `refused key ${key} ran on retry`).toBe(1);
}

describe("Redis out of memory", () => {
  it("with noeviction, new claims fail as store errors, while running requests still renew and complete", async () => {
    server = await RedisServer.start(dir.path);
    const client = clientFor();
    const store = new RedisStore({ client, timeoutMs: TIMEOUT_MS });
    const owner = claimArgs();
    const key = randomUUID();
    expect(await store.begin(key, owner)).toEqual({ state: "claimed", takeover: false });
    expect(await store.get(randomUUID())).toBeNull(); // load the get script while memory is available
    await client.config("SET", "maxmemory-policy", "noeviction");
    await client.config("SET", "maxmemory", "1");
    try {
      const fresh = randomUUID();
      const claiming = await store.begin(fresh, claimArgs()).catch((error: unknown) => error);
      expect(claiming).toBeInstanceOf(IdempotencyStoreError);
      expect((claiming as Error).message).toContain("OOM");
      expect(await store.get(fresh)).toBeNull();
      expect(await store.extend(key, owner.token, 60_000)).toBe(true);
      expect(await store.complete(key, owner.token, new Uint8Array([1, 2]), 60_000)).toBe(true);
      expect(await store.get(key)).toMatchObject({ state: "completed", response: new Uint8Array([1, 2]) });
    } finally {
      await client.config("SET", "maxmemory", "0");
    }
    expect(await store.begin(randomUUID(), claimArgs())).toEqual({ state: "claimed", takeover: false });
  });
});

describe("the engine's storeTimeoutMs", () => {
  it("bounds a request even when the store's own timeoutMs is longer: 503 without waiting for the store", async () => {
    server = await RedisServer.start(dir.path);
    const store = new RedisStore({ client: clientFor(), timeoutMs: 60_000 });
    const idempotency = createIdempotency({ store, scope: "global", storeTimeoutMs: 300 });
    expect((await send(idempotency, { key: randomUUID() }, () => created)).status).toBe(201);
    server.pause();
    let response: ClientResponse;
    let elapsed: number;
    try {
      const started = performance.now();
      response = await send(idempotency, { key: randomUUID() }, () => created);
      elapsed = performance.now() - started;
    } finally {
      server.resume();
    }
    expect(response.status).toBe(503);
    expect(response.executed).toBe(false);
    expect(JSON.parse(response.body).type).toBe(PROBLEM_TYPES.storeUnavailable);
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(300 + HANG_SLACK_MS);
  });
});

describe("the engine's deadline reaches the store", () => {
  it("a begin the engine gave up on (storeTimeoutMs 1000) during CLIENT PAUSE WRITE 1500 never applies later", async () => {
    server = await RedisServer.start(dir.path);
    const admin = clientFor();
    // The store's own default deadline (2000 ms) is longer than the engine's: the engine's must win.
    const store = new RedisStore({ client: clientFor() });
    const idempotency = createIdempotency({ store, scope: "global", leaseMs: 3_000 });
    expect(idempotency.options.storeTimeoutMs).toBe(1_000);
    expect((await send(idempotency, { key: randomUUID() }, () => created)).status).toBe(201);

    const key = randomUUID();
    let runs = 0;
    const handler = () => {
      runs++;
      return created;
    };
    const pausedAt = performance.now();
    await admin.call("CLIENT", "PAUSE", "1500", "WRITE");
    const duringPause = await send(idempotency, { key }, handler);
    expect(duringPause.status).toBe(503);
    expect(JSON.parse(duringPause.body).type).toBe(PROBLEM_TYPES.storeUnavailable);
    // Let the pause run out: the begin queued on the server then runs, after the engine's deadline.
    await sleep(1_500 - (performance.now() - pausedAt) + 50);
    expect(await store.get(key)).toBeNull(); // same connection: runs after the queued begin

    const retry = await send(idempotency, { key }, handler);
    expect(retry).toEqual({ ...created, executed: true });
    expect(runs).toBe(1);
  });
});

describe("outage under load, through the engine", () => {
  it("fail-closed: Redis paused mid-load → 503 problem+json within the timeout; resumed → recovers by itself", async () => {
    server = await RedisServer.start(dir.path);
    const store = new RedisStore({ client: clientFor(), timeoutMs: TIMEOUT_MS });
    const idempotency = createIdempotency({
      store,
      scope: "global",
      leaseMs: 60_000,
      storeTimeoutMs: TIMEOUT_MS * 2,
    });
    const result = await underLoad(
      idempotency,
      () => server.pause(),
      () => server.resume(),
    );
    expectFailClosed(result);
    await expectReplaysAfterRecovery(idempotency, result);
  });

  it("fail-closed: Redis killed mid-load → 503 problem+json; restarted on its port → recovers by itself", async () => {
    server = await RedisServer.start(dir.path);
    const port = server.port;
    const store = new RedisStore({ client: clientFor(), timeoutMs: TIMEOUT_MS });
    const idempotency = createIdempotency({
      store,
      scope: "global",
      leaseMs: 60_000,
      storeTimeoutMs: TIMEOUT_MS * 2,
    });
    const result = await underLoad(
      idempotency,
      () => server.kill(),
      async () => {
        server = await RedisServer.start(dir.path, { port });
      },
    );
    expectFailClosed(result);
    await expectReplaysAfterRecovery(idempotency, result);
  });

  it("fail-open: while Redis is paused requests run unprotected with a fail-open event; resumed → protected again", async () => {
    server = await RedisServer.start(dir.path);
    const events: IdempotencyEvent[] = [];
    const store = new RedisStore({ client: clientFor(), timeoutMs: TIMEOUT_MS });
    const idempotency = createIdempotency({
      store,
      scope: "global",
      leaseMs: 60_000,
      storeTimeoutMs: TIMEOUT_MS * 2,
      failOpen: true,
      onEvent: (event) => events.push(event),
    });
    expect((await send(idempotency, { key: randomUUID() }, () => created)).status).toBe(201);

    server.pause();
    let duringOutage: Array<{ response: ClientResponse; ms: number }>;
    try {
      duringOutage = await Promise.all(
        Array.from({ length: 5 }, async () => {
          const started = performance.now();
          const response = await send(idempotency, { key: randomUUID() }, () => created);
          return { response, ms: performance.now() - started };
        }),
      );
    } finally {
      server.resume();
    }
    for (const { response, ms } of duringOutage) {
      expect(response).toEqual({ ...created, executed: true });
      expect(ms).toBeLessThan(TIMEOUT_MS * 2 + HANG_SLACK_MS);
    }
    const failOpen = events.filter((event) => event.type === "fail-open");
    expect(failOpen).toHaveLength(5);
    for (const event of failOpen) {
      expect((event as { error: unknown }).error).toBeInstanceOf(IdempotencyStoreError);
    }

    const key = randomUUID();
    let runs = 0;
    const handler = () => {
      runs++;
      return created;
    };
    expect(await send(idempotency, { key }, handler)).toEqual({ ...created, executed: true });
    const replay = await send(idempotency, { key }, handler);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
  });
});
