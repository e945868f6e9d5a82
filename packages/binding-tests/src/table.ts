import type { EventEmitter } from "node:events";
import type { ServerResponse } from "node:http";
import {
  createIdempotency,
  type IdempotencyEvent,
  type IdempotencyOptions,
  PROBLEM_TYPES,
} from "@idempotency/core";
import { type InstrumentedStore, instrumentedStore } from "@idempotency/core/testing";
import { afterEach, describe, expect, it } from "vitest";
import { binaryBody, concatBytes, streamChunks, textChunks } from "./bodies.js";
import {
  abandonUpload,
  type HttpRequestInit,
  type HttpResponse,
  httpRequest,
  openRequest,
} from "./client.js";
import { TableHooks } from "./hooks.js";
import type { AppFactory, ConnectionCounter, MountMode, RunningApp } from "./types.js";

/** Options of {@link describeBindingBehaviour}. */
export interface DescribeBindingOptions {
  /** The mount modes to run the table in. Default: all three. */
  mounts?: readonly MountMode[];
  /** Per-case timeout in ms. Default `30_000` (the machine is small and shared; no case waits on purpose). */
  timeoutMs?: number;
  /**
   * The framework reads the whole body before the binding claims the key (Fastify claims in `preHandler`,
   * after parsing), so no claim exists yet when a client leaves mid-body. Default `false`.
   */
  parsesBeforeClaim?: boolean;
}

/** One case's running app and everything the table observes about it. */
interface CaseApp {
  app: RunningApp;
  hooks: TableHooks;
  store: InstrumentedStore;
  events: IdempotencyEvent[];
  /** The route's full path as the server sees it: `/api/orders` under the prefix mount, else `/orders`. */
  path(route: string): string;
  send(route: string, init?: HttpRequestInit): Promise<HttpResponse>;
  /** Resolves with the next event of this type (one already recorded and not yet awaited counts). */
  nextEvent(type: IdempotencyEvent["type"]): Promise<IdempotencyEvent>;
  eventTypes(): string[];
}

const ORDER = '{"item":"apple"}';

function mediaType(response: HttpResponse): string | undefined {
  return response.headers["content-type"]?.split(";")[0]?.trim().toLowerCase();
}

function expectProblem(response: HttpResponse, status: number, type: string): void {
  expect(response.status).toBe(status);
  expect(response.headers["content-type"]).toBe("application/problem+json");
  const problem = response.json() as Record<string, unknown>;
  expect(problem.type).toBe(type);
  expect(problem.status).toBe(status);
  expect(typeof problem.title).toBe("string");
  expect(typeof problem.detail).toBe("string");
  expect(response.headers["idempotent-replayed"]).toBeUndefined();
}

function expectReplayOf(replay: HttpResponse, first: HttpResponse): void {
  expect(replay.status).toBe(first.status);
  expect(replay.headers["idempotent-replayed"]).toBe("true");
  expect(replay.body.equals(first.body)).toBe(true);
  expect(replay.headers["content-type"]).toBe(first.headers["content-type"]);
  expect(replay.headers["content-length"]).toBe(String(first.body.length));
  expect(replay.headers["set-cookie"]).toBeUndefined();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until the server holds no connection: it has noticed every client disconnect. */
async function untilNoConnections(server: ConnectionCounter, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const count = await new Promise<number>((resolve, reject) =>
      server.getConnections((error, n) => (error ? reject(error) : resolve(n))),
    );
    if (count === 0) return;
    if (Date.now() > deadline) throw new Error(`the server still holds ${count} connection(s)`);
    await sleep(10);
  }
}

/** The server's responses as they start, and a wait for one of them to be ended by whoever answers it. */
function watchResponses(server: ConnectionCounter) {
  const responses: ServerResponse[] = [];
  const initialStatus = new Map<ServerResponse, number>();
  let arrived: () => void = () => {};
  (server as unknown as EventEmitter).on("request", (_req, res: ServerResponse) => {
    responses.push(res);
    initialStatus.set(res, res.statusCode); // Koa sets 404 before anything else runs
    arrived();
  });
  return {
    /** Resolves once the server has received `n` requests. */
    async received(n: number): Promise<void> {
      while (responses.length < n) await new Promise<void>((resolve) => (arrived = resolve));
    },
    /**
     * The `index`th response, once something called its `end()` (its socket may be long gone) or gave it a
     * final status (Koa 2 skips ending a response whose socket is gone).
     */
    async answered(index: number, timeoutMs = 10_000): Promise<ServerResponse> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const res = responses[index];
        if (res !== undefined && (res.writableEnded || res.statusCode !== initialStatus.get(res))) return res;
        if (Date.now() > deadline) throw new Error(`response ${index} was never answered`);
        await sleep(5);
      }
    },
  };
}

/**
 * Runs the shared HTTP behaviour table against one framework binding: every case over real HTTP on
 * 127.0.0.1, for each mount mode, with exact statuses, headers, bodies and handler execution counts.
 * `factory` builds the route catalogue (see this package's README) with the binding under test and starts
 * it; the table closes it after the case.
 *
 * @example
 * ```ts
 * import { describeBindingBehaviour } from "@idempotency/binding-tests";
 *
 * describeBindingBehaviour("express 5", (setup) => startExpressApp(express, setup));
 * ```
 */
export function describeBindingBehaviour(
  name: string,
  factory: AppFactory,
  options: DescribeBindingOptions = {},
): void {
  const mounts = options.mounts ?? ["route", "global", "prefix"];
  const timeout = options.timeoutMs ?? 30_000;

  describe(name, () => {
    for (const mount of mounts) {
      describe(`mounted ${mount}`, () => {
        const opened: CaseApp[] = [];

        afterEach(async () => {
          for (const running of opened.splice(0)) {
            running.hooks.openGate();
            await running.app.close();
          }
        });

        async function start(overrides: Partial<IdempotencyOptions> = {}): Promise<CaseApp> {
          const hooks = new TableHooks();
          const store = instrumentedStore();
          const events: IdempotencyEvent[] = [];
          const waiters: Array<{ type: string; resolve: (event: IdempotencyEvent) => void }> = [];
          const claimedByWaiter = new Set<IdempotencyEvent>();
          const options: IdempotencyOptions = {
            store,
            scope: (request) => request.headers.get("x-tenant") ?? "public",
            onEvent(event) {
              events.push(event);
              const waiter = waiters.find((candidate) => candidate.type === event.type);
              if (waiter) {
                waiters.splice(waiters.indexOf(waiter), 1);
                claimedByWaiter.add(event);
                waiter.resolve(event);
              }
            },
            ...overrides,
          };
          const app = await factory({ options, mount, hooks });
          const prefix = mount === "prefix" ? "/api" : "";
          const running: CaseApp = {
            app,
            hooks,
            store,
            events,
            path: (route) => `${prefix}${route}`,
            send: (route, init) => httpRequest(`${app.url}${prefix}${route}`, init),
            nextEvent(type) {
              const recorded = events.find((event) => event.type === type && !claimedByWaiter.has(event));
              if (recorded) {
                claimedByWaiter.add(recorded);
                return Promise.resolve(recorded);
              }
              return new Promise((resolve) => waiters.push({ type, resolve }));
            },
            eventTypes: () => events.map((event) => event.type),
          };
          opened.push(running);
          return running;
        }

        it(
          "runs the first request and sends its response unchanged",
          async () => {
            const t = await start();
            const res = await t.send("/orders", { key: "k-first", json: ORDER });
            expect(res.status).toBe(201);
            expect(mediaType(res)).toBe("application/json");
            expect(res.text()).toBe('{"id":1,"item":"apple"}');
            expect(res.headers.location).toBe("/orders/1");
            expect(res.headers["set-cookie"]).toEqual(["session=s1"]);
            expect(res.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("orders")).toBe(1);
            expect(t.eventTypes()).toEqual(["claimed", "completed"]);
            expect(t.events[0]?.path).toBe(t.path("/orders"));
            expect(t.events[0]?.method).toBe("POST");
          },
          timeout,
        );

        it(
          "replays the stored response byte for byte with Idempotent-Replayed: true, Location kept, Set-Cookie dropped",
          async () => {
            const t = await start();
            const first = await t.send("/orders", { key: "k-replay", json: ORDER });
            const replay = await t.send("/orders", { key: "k-replay", json: ORDER });
            expect(first.status).toBe(201);
            expectReplayOf(replay, first);
            expect(replay.text()).toBe('{"id":1,"item":"apple"}');
            expect(replay.headers.location).toBe("/orders/1");
            expect(t.hooks.count("orders")).toBe(1);
            expect(t.eventTypes()).toEqual(["claimed", "completed", "replayed"]);
          },
          timeout,
        );

        it(
          "answers the same key with a different body with 422 and does not run the handler",
          async () => {
            const t = await start();
            await t.send("/orders", { key: "k-mismatch", json: ORDER });
            const res = await t.send("/orders", { key: "k-mismatch", json: '{"item":"pear"}' });
            expectProblem(res, 422, PROBLEM_TYPES.keyReused);
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "answers a duplicate while the first runs with 409 and Retry-After, then replays once it is done",
          async () => {
            const t = await start();
            const first = t.send("/slow", { key: "k-slow" });
            await t.hooks.whenExecuted("slow");
            const duplicate = await t.send("/slow", { key: "k-slow" });
            expectProblem(duplicate, 409, PROBLEM_TYPES.inProgress);
            const retryAfter = Number(duplicate.headers["retry-after"]);
            expect(Number.isInteger(retryAfter)).toBe(true);
            expect(retryAfter).toBeGreaterThanOrEqual(1);
            expect(retryAfter).toBeLessThanOrEqual(30);
            t.hooks.openGate();
            const done = await first;
            expect(done.status).toBe(201);
            expect(done.text()).toBe('{"slow":1}');
            const replay = await t.send("/slow", { key: "k-slow" });
            expectReplayOf(replay, done);
            expect(t.hooks.count("slow")).toBe(1);
          },
          timeout,
        );

        it(
          "answers a different body while the first runs with 422, not 409",
          async () => {
            const t = await start();
            const first = t.send("/slow", { key: "k-slow-422" });
            await t.hooks.whenExecuted("slow");
            const other = await t.send("/slow", {
              key: "k-slow-422",
              headers: { "content-type": "text/plain" },
              body: "another request",
            });
            expectProblem(other, 422, PROBLEM_TYPES.keyReused);
            t.hooks.openGate();
            expect((await first).status).toBe(201);
            expect(t.hooks.count("slow")).toBe(1);
          },
          timeout,
        );

        const invalidKeys: Array<[string, string | string[]]> = [
          ["an empty key", ""],
          ["a key of 256 characters", "k".repeat(256)],
          ["a key with a quote inside", 'ab"c'],
          ["a malformed quoted key", '"abc'],
          ["two Idempotency-Key header fields", ["k-one", "k-two"]],
          ["a comma-merged list of keys", "k-one, k-two"],
        ];
        for (const [what, key] of invalidKeys) {
          it(
            `answers ${what} with 400 before any store I/O`,
            async () => {
              const t = await start();
              const res = await t.send("/orders", { key, json: ORDER });
              expectProblem(res, 400, PROBLEM_TYPES.invalidKey);
              expect(t.hooks.count("orders")).toBe(0);
              expect(t.store.totalCalls).toBe(0);
            },
            timeout,
          );
        }

        it(
          'names the character the client sent in a key\'s 400: "é" (U+00E9) for the UTF-8 bytes of café',
          async () => {
            const t = await start();
            // One character per byte, as Node sends header values: the UTF-8 encoding of "café".
            const res = await t.send("/orders", { key: "caf\u00c3\u00a9", json: ORDER });
            expectProblem(res, 400, PROBLEM_TYPES.invalidKey);
            expect((res.json() as { detail: string }).detail).toBe(
              'Invalid Idempotency-Key header: it contains the character "\u00e9" (U+00E9) at position 4; ' +
                'use visible ASCII (0x21-0x7E) without " or ,.',
            );
            expect(t.store.totalCalls).toBe(0);
          },
          timeout,
        );

        it(
          "accepts a key of 255 characters and a quoted sf-string key as the same key unquoted",
          async () => {
            const t = await start();
            const long = await t.send("/orders", { key: "k".repeat(255), json: ORDER });
            expect(long.status).toBe(201);
            const quoted = await t.send("/orders", { key: '"k-quoted"', json: ORDER });
            expect(quoted.status).toBe(201);
            const raw = await t.send("/orders", { key: "k-quoted", json: ORDER });
            expectReplayOf(raw, quoted);
            expect(t.hooks.count("orders")).toBe(2);
          },
          timeout,
        );

        it(
          "lets a request without a key through unprotected",
          async () => {
            const t = await start();
            const first = await t.send("/orders", { json: ORDER });
            const second = await t.send("/orders", { json: ORDER });
            expect(first.text()).toBe('{"id":1,"item":"apple"}');
            expect(second.text()).toBe('{"id":2,"item":"apple"}');
            expect(second.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("orders")).toBe(2);
            expect(t.store.totalCalls).toBe(0);
          },
          timeout,
        );

        it(
          "answers a request without a key with 400 when keys are required",
          async () => {
            const t = await start({ required: true });
            const res = await t.send("/orders", { json: ORDER });
            expectProblem(res, 400, PROBLEM_TYPES.missingKey);
            expect(t.hooks.count("orders")).toBe(0);
            expect(t.store.totalCalls).toBe(0);
          },
          timeout,
        );

        it(
          "lets the app's error handler answer a thrown error, releases the claim, and runs a retry again",
          async () => {
            const t = await start();
            const first = await t.send("/throw", { key: "k-throw" });
            expect(first.status).toBe(500);
            expect(mediaType(first)).toBe("text/plain");
            expect(first.text()).toBe("handled: boom");
            const retry = await t.send("/throw", { key: "k-throw" });
            expect(retry.status).toBe(500);
            expect(retry.text()).toBe("handled: boom");
            expect(retry.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("throw")).toBe(2);
            expect(t.eventTypes()).toEqual(["claimed", "released", "claimed", "released"]);
            expect(
              t.events.filter((event) => event.type === "released").map((event) => event.status),
            ).toEqual([500, 500]);
          },
          timeout,
        );

        it(
          "does not store a 5xx the handler sends: a retry runs again",
          async () => {
            const t = await start();
            const first = await t.send("/fail", { key: "k-fail" });
            expect(first.status).toBe(500);
            expect(first.text()).toBe("failed 1");
            const retry = await t.send("/fail", { key: "k-fail" });
            expect(retry.status).toBe(500);
            expect(retry.text()).toBe("failed 2");
            expect(retry.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("fail")).toBe(2);
          },
          timeout,
        );

        it(
          "releases the claim when the handler calls notStarted: a retry runs again",
          async () => {
            const t = await start();
            const first = await t.send("/not-started", { key: "k-ns", json: ORDER });
            expect(first.status).toBe(403);
            expect(mediaType(first)).toBe("application/json");
            expect(first.text()).toBe('{"error":"forbidden"}');
            const retry = await t.send("/not-started", { key: "k-ns", json: ORDER });
            expect(retry.status).toBe(403);
            expect(retry.text()).toBe('{"error":"forbidden"}');
            expect(retry.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("not-started")).toBe(2);
            expect(t.eventTypes()).toEqual(["claimed", "not-started", "claimed", "not-started"]);
          },
          timeout,
        );

        it(
          "stores and replays a 4xx the handler sends",
          async () => {
            const t = await start();
            const first = await t.send("/client-error", { key: "k-400", json: ORDER });
            expect(first.status).toBe(400);
            expect(first.text()).toBe('{"error":"invalid item"}');
            const replay = await t.send("/client-error", { key: "k-400", json: ORDER });
            expectReplayOf(replay, first);
            expect(t.hooks.count("client-error")).toBe(1);
          },
          timeout,
        );

        it(
          "replays a text response",
          async () => {
            const t = await start();
            const first = await t.send("/text", { key: "k-text" });
            expect(first.status).toBe(200);
            expect(mediaType(first)).toBe("text/plain");
            expect(first.text()).toBe("hello 1");
            const replay = await t.send("/text", { key: "k-text" });
            expectReplayOf(replay, first);
            expect(t.hooks.count("text")).toBe(1);
          },
          timeout,
        );

        it(
          "replays a binary response byte for byte",
          async () => {
            const t = await start();
            const first = await t.send("/binary", { key: "k-bin" });
            expect(first.status).toBe(200);
            expect(mediaType(first)).toBe("application/octet-stream");
            expect(first.body.equals(Buffer.from(binaryBody(1)))).toBe(true);
            const replay = await t.send("/binary", { key: "k-bin" });
            expectReplayOf(replay, first);
            expect(replay.headers["content-length"]).toBe("65536");
            expect(t.hooks.count("binary")).toBe(1);
          },
          timeout,
        );

        it(
          "replays a response written in chunks",
          async () => {
            const t = await start();
            const first = await t.send("/chunks", { key: "k-chunks" });
            expect(first.status).toBe(200);
            expect(mediaType(first)).toBe("text/plain");
            expect(first.headers["transfer-encoding"]).toBe("chunked");
            expect(first.text()).toBe(textChunks(1).join(""));
            const replay = await t.send("/chunks", { key: "k-chunks" });
            expectReplayOf(replay, first);
            expect(replay.headers["transfer-encoding"]).toBeUndefined();
            expect(t.hooks.count("chunks")).toBe(1);
          },
          timeout,
        );

        it(
          "replays a streamed binary response byte for byte",
          async () => {
            const t = await start();
            const first = await t.send("/stream", { key: "k-stream" });
            expect(first.status).toBe(200);
            expect(mediaType(first)).toBe("application/octet-stream");
            expect(first.body.equals(concatBytes(streamChunks(1)))).toBe(true);
            const replay = await t.send("/stream", { key: "k-stream" });
            expectReplayOf(replay, first);
            expect(t.hooks.count("stream")).toBe(1);
          },
          timeout,
        );

        it(
          "replays a 204 with no body",
          async () => {
            const t = await start();
            const first = await t.send("/empty", { key: "k-204" });
            expect(first.status).toBe(204);
            expect(first.body.length).toBe(0);
            const replay = await t.send("/empty", { key: "k-204" });
            expect(replay.status).toBe(204);
            expect(replay.body.length).toBe(0);
            expect(replay.headers["idempotent-replayed"]).toBe("true");
            expect(replay.headers["content-length"]).toBeUndefined(); // RFC 9110 §8.6: none on a 204
            expect(t.hooks.count("empty")).toBe(1);
          },
          timeout,
        );

        it(
          "replays a redirect with its Location",
          async () => {
            const t = await start();
            const first = await t.send("/redirect", { key: "k-303" });
            expect(first.status).toBe(303);
            expect(first.headers.location).toBe("/orders/1");
            const replay = await t.send("/redirect", { key: "k-303" });
            expect(replay.status).toBe(303);
            expect(replay.headers.location).toBe("/orders/1");
            expect(replay.headers["idempotent-replayed"]).toBe("true");
            expect(replay.body.equals(first.body)).toBe(true);
            expect(t.hooks.count("redirect")).toBe(1);
          },
          timeout,
        );

        it(
          "captures a header set after the status and replays it",
          async () => {
            const t = await start();
            const first = await t.send("/headers-late", { key: "k-late" });
            expect(first.status).toBe(200);
            expect(first.headers["x-late"]).toBe("yes");
            expect(first.text()).toBe("late");
            const replay = await t.send("/headers-late", { key: "k-late" });
            expectReplayOf(replay, first);
            expect(replay.headers["x-late"]).toBe("yes");
            expect(t.hooks.count("headers-late")).toBe(1);
          },
          timeout,
        );

        it(
          "runs the handler exactly once for 200 concurrent duplicates",
          async () => {
            const t = await start();
            const responses = await Promise.all(
              Array.from({ length: 200 }, () => t.send("/orders", { key: "k-race", json: ORDER })),
            );
            expect(t.hooks.count("orders")).toBe(1);
            const originals = responses.filter(
              (res) => res.status === 201 && res.headers["idempotent-replayed"] === undefined,
            );
            const replays = responses.filter(
              (res) => res.status === 201 && res.headers["idempotent-replayed"] === "true",
            );
            const conflicts = responses.filter((res) => res.status === 409);
            expect(originals).toHaveLength(1);
            expect(originals.length + replays.length + conflicts.length).toBe(200);
            for (const res of [...originals, ...replays]) expect(res.text()).toBe('{"id":1,"item":"apple"}');
            for (const res of conflicts) expectProblem(res, 409, PROBLEM_TYPES.inProgress);
          },
          timeout,
        );

        it(
          "keeps two principals with the same key apart: two executions",
          async () => {
            const t = await start();
            const a = await t.send("/orders", { key: "k-shared", json: ORDER, headers: { "x-tenant": "a" } });
            const b = await t.send("/orders", { key: "k-shared", json: ORDER, headers: { "x-tenant": "b" } });
            expect(a.text()).toBe('{"id":1,"item":"apple"}');
            expect(b.text()).toBe('{"id":2,"item":"apple"}');
            expect(b.headers["idempotent-replayed"]).toBeUndefined();
            const againA = await t.send("/orders", {
              key: "k-shared",
              json: ORDER,
              headers: { "x-tenant": "a" },
            });
            const againB = await t.send("/orders", {
              key: "k-shared",
              json: ORDER,
              headers: { "x-tenant": "b" },
            });
            expectReplayOf(againA, a);
            expectReplayOf(againB, b);
            expect(t.hooks.count("orders")).toBe(2);
          },
          timeout,
        );

        it(
          "treats the same key on another path as another record",
          async () => {
            const t = await start();
            expect((await t.send("/orders", { key: "k-paths", json: ORDER })).status).toBe(201);
            expect((await t.send("/text", { key: "k-paths" })).status).toBe(200);
            expect(t.hooks.count("orders")).toBe(1);
            expect(t.hooks.count("text")).toBe(1);
          },
          timeout,
        );

        it(
          "answers 503 problem+json with Retry-After when the store is down, without running the handler",
          async () => {
            const t = await start();
            t.store.down = true;
            const res = await t.send("/orders", { key: "k-down", json: ORDER });
            expectProblem(res, 503, PROBLEM_TYPES.storeUnavailable);
            expect(res.headers["retry-after"]).toBe("1");
            expect(t.hooks.count("orders")).toBe(0);
            expect(t.eventTypes()).toEqual(["store-error"]);
          },
          timeout,
        );

        it(
          "stores the response of a request whose client disconnected, and replays it to the retry",
          async () => {
            const t = await start();
            const pending = openRequest(`${t.app.url}${t.path("/slow")}`, { key: "k-gone" });
            pending.response.catch(() => {}); // the client gave up: its socket is destroyed
            await t.hooks.whenExecuted("slow");
            pending.destroy();
            await untilNoConnections(t.app.server);
            const completed = t.nextEvent("completed");
            t.hooks.openGate();
            const event = await completed;
            expect(event.type === "completed" && event.status).toBe(201);
            const retry = await t.send("/slow", { key: "k-gone" });
            expect(retry.status).toBe(201);
            expect(retry.text()).toBe('{"slow":1}');
            expect(retry.headers["idempotent-replayed"]).toBe("true");
            expect(t.hooks.count("slow")).toBe(1);
          },
          timeout,
        );

        it(
          "answers 400 request-aborted to a client that leaves mid-body: nothing is claimed or run, its retry runs once",
          async () => {
            const t = await start();
            const responses = watchResponses(t.app.server);
            await abandonUpload(`${t.app.url}${t.path("/orders")}`, {
              key: "k-upload",
              declaredBytes: 200,
              sentBytes: 12,
              leaveWhen: responses.received(1),
            });
            const answered = await responses.answered(0);
            expect(answered.statusCode).toBe(400);
            expect(t.store.calls.begin).toBe(0);
            expect(t.hooks.count("orders")).toBe(0);
            const retry = await t.send("/orders", { key: "k-upload", json: ORDER });
            expect(retry.status).toBe(201);
            expect(retry.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "does not store the error answered to a client that left mid-body after its claim (fingerprint: false): its retry runs",
          async () => {
            const t = await start({ fingerprint: false });
            const responses = watchResponses(t.app.server);
            const released = t.nextEvent("released");
            await abandonUpload(`${t.app.url}${t.path("/orders")}`, {
              key: "k-upload-late",
              declaredBytes: 200,
              sentBytes: 12,
              leaveWhen: options.parsesBeforeClaim ? responses.received(1) : t.store.whenCalled("begin", 1),
            });
            const answered = await responses.answered(0);
            if (options.parsesBeforeClaim) {
              expect(answered.statusCode).toBeGreaterThanOrEqual(400); // the framework's own parse error
              expect(t.store.calls.begin).toBe(0);
            } else {
              const event = await released;
              expect(event.type === "released" && event.reason).toBe("request-aborted");
            }
            expect(t.store.calls.complete).toBe(0);
            const retry = await t.send("/orders", { key: "k-upload-late", json: ORDER });
            expect(retry.status).toBe(201);
            expect(retry.headers["idempotent-replayed"]).toBeUndefined();
          },
          timeout,
        );

        it(
          "runs nothing for a client that left after its body, while the key was being claimed: the retry runs once",
          async () => {
            const t = await start();
            t.store.delays.begin = 100; // the claim is still under way when the client leaves
            const pending = openRequest(`${t.app.url}${t.path("/orders")}`, {
              key: "k-left-early",
              json: ORDER,
            });
            pending.response.catch(() => {}); // the client gave up: its socket is destroyed
            await t.store.whenCalled("begin", 1);
            pending.destroy();
            await untilNoConnections(t.app.server);
            if (options.parsesBeforeClaim) {
              // The body was parsed before the claim: the handler runs and its response is stored.
              await t.nextEvent("completed");
              expect(t.hooks.count("orders")).toBe(1);
              const retry = await t.send("/orders", { key: "k-left-early", json: ORDER });
              expect(retry.headers["idempotent-replayed"]).toBe("true");
              return;
            }
            const released = await t.nextEvent("released");
            expect(released.type === "released" && released.reason).toBe("no-response");
            expect(t.hooks.count("orders")).toBe(0);
            const retry = await t.send("/orders", { key: "k-left-early", json: ORDER });
            expect(retry.status).toBe(201);
            expect(retry.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        for (const [framing, route] of [
          ["Content-Length", "/orders"],
          ["chunked", "/chunks"],
        ] as const) {
          it(
            `completes the record before the client has the whole response (${framing}): an immediate retry replays`,
            async () => {
              const t = await start();
              t.store.delays.complete = 50; // a slow store: a binding that ends the response early is caught
              let completedAtEnd: boolean | undefined;
              const init = { key: `k-immediate-${framing}`, json: ORDER };
              const first = await t.send(route, {
                ...init,
                onEnd: () => {
                  completedAtEnd = t.events.some((event) => event.type === "completed");
                },
              });
              const retry = await t.send(route, init);
              expect(completedAtEnd).toBe(true);
              if (framing === "chunked") expect(first.headers["transfer-encoding"]).toBe("chunked");
              else expect(first.headers["content-length"]).toBe(String(first.body.length));
              expectReplayOf(retry, first);
            },
            timeout,
          );
        }

        it(
          "keeps the query string out of the path but in the fingerprint",
          async () => {
            const t = await start();
            const first = await t.send("/orders?a=1", { key: "k-query", json: ORDER });
            expect(first.status).toBe(201);
            const other = await t.send("/orders?a=2", { key: "k-query", json: ORDER });
            expectProblem(other, 422, PROBLEM_TYPES.keyReused);
            const same = await t.send("/orders?a=1", { key: "k-query", json: ORDER });
            expectReplayOf(same, first);
            expect(t.events.find((event) => event.type === "claimed")?.path).toBe(t.path("/orders"));
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "keys an absolute-form target on the path the framework routes, never a normalised one",
          async () => {
            const t = await start();
            const first = await t.send("/orders", { key: "k-abs", json: ORDER });
            expect(first.status).toBe(201);
            // Express and Koa route "/zz/%2e%2e/orders" as it is (no such route); Hono normalises it to /orders.
            const dotted = `http://127.0.0.1${t.path("/zz/%2e%2e/orders")}`;
            const other = await t.send("/orders", { key: "k-abs", json: ORDER, target: dotted });
            if (other.status === 201) expectReplayOf(other, first);
            else {
              expect(other.status).toBe(404);
              expect(other.headers["idempotent-replayed"]).toBeUndefined();
            }
            // The reverse order: whatever the dotted target got, a genuine POST /orders never replays a 404.
            const reversed = await t.send("/orders", { key: "k-abs-2", json: ORDER, target: dotted });
            const genuine = await t.send("/orders", { key: "k-abs-2", json: ORDER });
            expect(genuine.status).toBe(201);
            expect((genuine.json() as { item: string }).item).toBe("apple");
            if (reversed.status === 201) expectReplayOf(genuine, reversed);
            expect(t.hooks.count("orders")).toBe(reversed.status === 201 ? 2 : 2);
          },
          timeout,
        );

        it(
          "ignores a raw #fragment in the target: it is part of neither the path nor the query",
          async () => {
            const t = await start();
            const first = await t.send("/orders", {
              key: "k-frag",
              json: ORDER,
              target: t.path("/orders?a=1#x"),
            });
            expect(first.status).toBe(201);
            const same = await t.send("/orders?a=1", { key: "k-frag", json: ORDER });
            expectReplayOf(same, first);
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "fingerprints JSON regardless of key order and whitespace, but keeps every digit of a number",
          async () => {
            const t = await start();
            const first = await t.send("/orders", { key: "k-json", json: '{"item":"apple","qty":2}' });
            const reordered = await t.send("/orders", {
              key: "k-json",
              json: '{ "qty": 2,\n "item": "apple" }',
            });
            expectReplayOf(reordered, first);
            const big = await t.send("/orders", {
              key: "k-big",
              json: '{"item":"apple","qty":9007199254740993}',
            });
            expect(big.status).toBe(201);
            const rounded = await t.send("/orders", {
              key: "k-big",
              json: '{"item":"apple","qty":9007199254740992}',
            });
            expectProblem(rounded, 422, PROBLEM_TYPES.keyReused);
            expect(t.hooks.count("orders")).toBe(2);
          },
          timeout,
        );

        it(
          "replays Set-Cookie when replayHeaders re-admits it",
          async () => {
            const t = await start({ replayHeaders: { allow: ["set-cookie"] } });
            const first = await t.send("/orders", { key: "k-cookie", json: ORDER });
            const replay = await t.send("/orders", { key: "k-cookie", json: ORDER });
            expect(first.headers["set-cookie"]).toEqual(["session=s1"]);
            expect(replay.headers["idempotent-replayed"]).toBe("true");
            expect(replay.headers["set-cookie"]).toEqual(["session=s1"]);
            expect(replay.body.equals(first.body)).toBe(true);
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "sends a response above maxResponseBytes in full, then answers retries with 410 and its Location",
          async () => {
            const t = await start({ maxResponseBytes: 1_000 });
            const first = await t.send("/binary", { key: "k-big-binary" });
            expect(first.status).toBe(200);
            expect(first.body.equals(Buffer.from(binaryBody(1)))).toBe(true);
            const retry = await t.send("/binary", { key: "k-big-binary" });
            expectProblem(retry, 410, PROBLEM_TYPES.responseNotStored);
            expect(t.hooks.count("binary")).toBe(1);

            const small = await start({ maxResponseBytes: 10 });
            const order = await small.send("/orders", { key: "k-big-order", json: ORDER });
            expect(order.text()).toBe('{"id":1,"item":"apple"}');
            const orderRetry = await small.send("/orders", { key: "k-big-order", json: ORDER });
            expectProblem(orderRetry, 410, PROBLEM_TYPES.responseNotStored);
            expect(orderRetry.headers.location).toBe("/orders/1");
            expect(small.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "runs the handler unprotected when the store is down and failOpen is set",
          async () => {
            const t = await start({ failOpen: true });
            t.store.down = true;
            const res = await t.send("/orders", { key: "k-open", json: ORDER });
            expect(res.status).toBe(201);
            expect(res.text()).toBe('{"id":1,"item":"apple"}');
            expect(res.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.hooks.count("orders")).toBe(1);
            expect(t.eventTypes()).toContain("fail-open");
          },
          timeout,
        );

        it(
          "lets a duplicate wait with waitMs and replays the first response to it",
          async () => {
            const t = await start({ waitMs: 20_000 });
            const first = t.send("/slow", { key: "k-wait" });
            await t.hooks.whenExecuted("slow");
            const duplicate = t.send("/slow", { key: "k-wait" });
            await t.store.whenCalled("begin", 2); // the duplicate found the first still running
            t.hooks.openGate();
            const original = await first;
            const waited = await duplicate;
            expect(original.status).toBe(201);
            expectReplayOf(waited, original);
            expect(waited.text()).toBe('{"slow":1}');
            expect(t.hooks.count("slow")).toBe(1);
          },
          timeout,
        );

        it(
          "stores a streamed response whose client left mid-way: the stream is read to its end, the retry replays it",
          async () => {
            const t = await start();
            let firstBytes!: () => void;
            const arrived = new Promise<void>((resolve) => {
              firstBytes = resolve;
            });
            const pending = openRequest(`${t.app.url}${t.path("/stream-gated")}`, {
              key: "k-gated",
              onFirstByte: firstBytes,
            });
            pending.response.catch(() => {}); // it is cut off on purpose
            await arrived;
            pending.destroy();
            await untilNoConnections(t.app.server);
            t.hooks.openGate();
            await t.nextEvent("completed");
            const retry = await t.send("/stream-gated", { key: "k-gated" });
            expect(retry.status).toBe(200);
            expect(retry.text()).toBe("part one 1\npart two 1\n");
            expect(retry.headers["idempotent-replayed"]).toBe("true");
            expect(t.hooks.count("stream-gated")).toBe(1);
            expect(t.eventTypes()).toEqual(["claimed", "completed", "replayed"]);
          },
          timeout,
        );

        it(
          "keeps the lease while the handler runs after its client gave up: retries over 3 leases get 409, then the replay",
          async () => {
            const leaseMs = 300;
            const t = await start({ leaseMs });
            const pending = openRequest(`${t.app.url}${t.path("/slow")}`, { key: "k-client-gone" });
            pending.response.catch(() => {}); // the client gives up on its own timeout
            await t.hooks.whenExecuted("slow");
            pending.destroy();
            await untilNoConnections(t.app.server);
            const gaveUpAt = Date.now();
            const statuses: number[] = [];
            while (Date.now() - gaveUpAt < 3 * leaseMs) {
              const retry = await t.send("/slow", { key: "k-client-gone" });
              expectProblem(retry, 409, PROBLEM_TYPES.inProgress);
              expect(retry.headers["retry-after"]).toBe("1");
              statuses.push(retry.status);
              await sleep(leaseMs / 6);
            }
            expect(statuses.length).toBeGreaterThanOrEqual(6);
            t.hooks.openGate();
            await t.nextEvent("completed");
            const replay = await t.send("/slow", { key: "k-client-gone" });
            expect(replay.status).toBe(201);
            expect(replay.text()).toBe('{"slow":1}');
            expect(replay.headers["idempotent-replayed"]).toBe("true");
            expect(t.hooks.count("slow")).toBe(1);
            expect(t.eventTypes().filter((type) => type !== "in-progress")).toEqual([
              "claimed",
              "completed",
              "replayed",
            ]);
          },
          timeout,
        );

        it(
          "stops renewing at maxExecutionMs and says so (execution-limit); once the lease ends a retry takes over",
          async () => {
            const leaseMs = 300;
            const t = await start({ leaseMs, maxExecutionMs: 2 * leaseMs });
            const first = t.send("/slow", { key: "k-bound" });
            first.catch(() => {}); // awaited below; a failed assertion must not leave it unhandled
            await t.hooks.whenExecuted("slow");
            expect(await t.nextEvent("execution-limit")).toMatchObject({ maxExecutionMs: 2 * leaseMs });
            const duringLastLease = await t.send("/slow", { key: "k-bound" });
            expectProblem(duringLastLease, 409, PROBLEM_TYPES.inProgress);
            await sleep(leaseMs); // the lease renewed last runs out about now
            // A loaded machine can run the last renewal late, so retry (each one a 409 while the lease
            // lasts) until one takes over, within a bound far beyond one lease.
            const takenOver = t.hooks.whenExecuted("slow", 2).then(() => "taken over" as const);
            const giveUpAt = Date.now() + 20 * leaseMs;
            let retry = t.send("/slow", { key: "k-bound" });
            while ((await Promise.race([takenOver, retry.then(() => "answered" as const)])) === "answered") {
              expectProblem(await retry, 409, PROBLEM_TYPES.inProgress);
              if (Date.now() > giveUpAt) throw new Error(`no retry took over within ${20 * leaseMs} ms`);
              await sleep(leaseMs / 6);
              retry = t.send("/slow", { key: "k-bound" });
            }
            t.hooks.openGate();
            expect((await first).text()).toBe('{"slow":1}');
            expect((await retry).text()).toBe('{"slow":2}');
            const claims = t.events.filter((event) => event.type === "claimed");
            expect(claims.map((event) => event.type === "claimed" && event.takeover)).toEqual([false, true]);
            expect(t.eventTypes()).toContain("lease-lost");
            expect(t.hooks.count("slow")).toBe(2);
          },
          timeout,
        );

        it(
          "hands the handler its claim's signal (idempotencySignal): aborted at maxExecutionMs, none when unclaimed",
          async () => {
            const t = await start({ leaseMs: 300, maxExecutionMs: 600 });
            const bounded = await t.send("/signal", { key: "k-signal" });
            expect(bounded.status).toBe(200);
            expect(bounded.json()).toEqual({ aborted: true, code: "ERR_IDEMPOTENCY_EXECUTION_LIMIT" });
            const unclaimed = await t.send("/signal");
            expect(unclaimed.json()).toEqual({ signal: null });
            expect(t.hooks.count("signal")).toBe(2);
            expect(t.eventTypes()).toEqual(["claimed", "execution-limit", "completed"]);
          },
          timeout,
        );

        it(
          "stores a streamed response that only starts after its client left: the retry replays it, no second run",
          async () => {
            const t = await start();
            const pending = openRequest(`${t.app.url}${t.path("/stream-late")}`, { key: "k-late-stream" });
            pending.response.catch(() => {}); // the client gives up before the stream starts
            await t.hooks.whenExecuted("stream-late");
            pending.destroy();
            await untilNoConnections(t.app.server);
            t.hooks.openGate();
            await t.nextEvent("completed");
            const retry = await t.send("/stream-late", { key: "k-late-stream" });
            expect(retry.status).toBe(200);
            expect(retry.body.equals(Buffer.from(concatBytes(streamChunks(1))))).toBe(true);
            expect(retry.headers["idempotent-replayed"]).toBe("true");
            expect(t.hooks.count("stream-late")).toBe(1);
            expect(t.eventTypes()).toEqual(["claimed", "completed", "replayed"]);
          },
          timeout,
        );

        it(
          "answers 413 problem+json to a body above maxRequestBytes, declared or chunked, before any store call",
          async () => {
            const t = await start({ maxRequestBytes: 1_000 });
            const item = "x".repeat(1_000);
            const declared = await t.send("/orders", { key: "k-413a", json: `{"item":"${item}"}` });
            expectProblem(declared, 413, PROBLEM_TYPES.requestTooLarge);
            const chunked = await t.send("/orders", {
              key: "k-413b",
              json: `{"item":"${item}"}`,
              chunked: true,
            });
            expectProblem(chunked, 413, PROBLEM_TYPES.requestTooLarge);
            expect(t.store.totalCalls).toBe(0);
            expect(t.hooks.count("orders")).toBe(0);
            const small = await t.send("/orders", { key: "k-413c", json: ORDER, chunked: true });
            expect(small.status).toBe(201);
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "answers 413 at once to a chunked body far above maxRequestBytes that is still arriving",
          async () => {
            const t = await start({ maxRequestBytes: 64 * 1024 });
            const huge = `{"item":"${"x".repeat(2 * 1024 * 1024)}"}`;
            const chunked = await t.send("/orders", { key: "k-huge", json: huge, chunked: true });
            expectProblem(chunked, 413, PROBLEM_TYPES.requestTooLarge);
            const declared = await t.send("/orders", { key: "k-huge-2", json: huge });
            expectProblem(declared, 413, PROBLEM_TYPES.requestTooLarge);
            expect(t.store.totalCalls).toBe(0);
            expect(t.hooks.count("orders")).toBe(0);
            const small = await t.send("/orders", { key: "k-small", json: ORDER, chunked: true });
            expect(small.status).toBe(201);
          },
          timeout,
        );

        it(
          "bounds the body a custom fingerprint function reads by maxRequestBytes: 413, declared or chunked",
          async () => {
            const t = await start({
              maxRequestBytes: 64 * 1024,
              fingerprint: async (request) => String((await request.body()).length),
            });
            // Above the limit, and below the frameworks' own body limits (Fastify's bodyLimit is 1 MiB).
            const huge = `{"item":"${"x".repeat(256 * 1024)}"}`;
            const chunked = await t.send("/orders", { key: "k-fp-huge", json: huge, chunked: true });
            expectProblem(chunked, 413, PROBLEM_TYPES.requestTooLarge);
            const declared = await t.send("/orders", { key: "k-fp-huge-2", json: huge });
            expectProblem(declared, 413, PROBLEM_TYPES.requestTooLarge);
            expect(t.store.totalCalls).toBe(0);
            const small = await t.send("/orders", { key: "k-fp-small", json: ORDER });
            expect(small.status).toBe(201);
            const retry = await t.send("/orders", { key: "k-fp-small", json: ORDER });
            expectReplayOf(retry, small);
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "skip lets the requests it picks through unguarded: the handler runs each time, nothing is stored",
          async () => {
            const t = await start({ skip: (request) => request.headers.get("x-internal") === "yes" });
            const internal = { key: "k-skip", json: ORDER, headers: { "x-internal": "yes" } };
            expect((await t.send("/orders", internal)).text()).toBe('{"id":1,"item":"apple"}');
            const again = await t.send("/orders", internal);
            expect(again.text()).toBe('{"id":2,"item":"apple"}');
            expect(again.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.store.totalCalls).toBe(0);
            const guarded = await t.send("/orders", { key: "k-skip", json: ORDER });
            expect(
              (await t.send("/orders", { key: "k-skip", json: ORDER })).headers["idempotent-replayed"],
            ).toBe("true");
            expect(guarded.status).toBe(201);
            expect(t.hooks.count("orders")).toBe(3);
          },
          timeout,
        );

        it(
          "formatProblem shapes the problem answers in the app's envelope, with the contract's status and headers",
          async () => {
            const t = await start({
              formatProblem: (problem) => ({
                body: { error: { title: problem.title, status: problem.status } },
                headers: { "x-envelope": "v2" },
              }),
            });
            const first = await t.send("/orders", { key: "k-shape", json: ORDER });
            expect(first.status).toBe(201);
            const reused = await t.send("/orders", { key: "k-shape", json: '{"item":"pear"}' });
            expect(reused.status).toBe(422);
            expect(reused.headers["content-type"]).toMatch(/^application\/json/);
            expect(reused.headers["x-envelope"]).toBe("v2");
            expect(reused.json()).toEqual({ error: { title: "Idempotency key reused", status: 422 } });
            const invalid = await t.send("/orders", { key: "", json: ORDER });
            expect(invalid.status).toBe(400);
            expect(invalid.json()).toEqual({ error: { title: "Invalid idempotency key", status: 400 } });
            t.store.down = true;
            const down = await t.send("/orders", { key: "k-shape-2", json: ORDER });
            expect([down.status, down.headers["retry-after"], down.headers["x-envelope"]]).toEqual([
              503,
              "1",
              "v2",
            ]);
            expect(t.hooks.count("orders")).toBe(1);
          },
          timeout,
        );

        it(
          "forget (on an engine made with the same options) deletes exactly the record the binding wrote",
          async () => {
            const t = await start();
            const first = await t.send("/orders", { key: "k-forget", json: ORDER });
            const otherTenant = await t.send("/orders", {
              key: "k-forget",
              json: ORDER,
              headers: { "x-tenant": "b" },
            });
            const admin = createIdempotency({
              store: t.store,
              scope: (request) => request.headers.get("x-tenant") ?? "public",
            });
            expect(
              await admin.forget("k-forget", { scope: "public", method: "POST", path: t.path("/orders") }),
            ).toBe(true);
            const rerun = await t.send("/orders", { key: "k-forget", json: ORDER });
            expect(rerun.headers["idempotent-replayed"]).toBeUndefined();
            expect(rerun.text()).not.toBe(first.text());
            const kept = await t.send("/orders", {
              key: "k-forget",
              json: ORDER,
              headers: { "x-tenant": "b" },
            });
            expectReplayOf(kept, otherTenant);
            expect(t.hooks.count("orders")).toBe(3);
          },
          timeout,
        );

        it(
          "passes a GET straight through, key or not",
          async () => {
            const t = await start();
            const first = await t.send("/text", { method: "GET", key: "k-get" });
            const second = await t.send("/text", { method: "GET", key: "k-get" });
            expect(first.status).toBe(200);
            expect(first.text()).toBe("hello 1");
            expect(second.text()).toBe("hello 2");
            expect(second.headers["idempotent-replayed"]).toBeUndefined();
            expect(t.store.totalCalls).toBe(0);
            expect(t.events).toEqual([]);
          },
          timeout,
        );
      });
    }
  });
}
