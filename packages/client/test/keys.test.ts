/**
 * Which requests get a key, in which form, and that one logical operation keeps one key: against a plain
 * server that records every header it receives, and against @idempotency/hono over a real socket.
 */
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { MemoryStore } from "@idempotency/core";
import { idempotency } from "@idempotency/hono";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { createIdempotentFetch, IdempotentFetchOptionsError, idempotentFetch } from "../src/index.js";
import { fakeClock, flakyProxy, type Running, scriptedServer } from "./support.js";

const open: Running[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((running) => running.close()));
});
async function recorder() {
  const server = await scriptedServer([{ status: 200 }]);
  open.push(server);
  return server;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("which requests get a key", () => {
  it("POST and PATCH (fetch leaves a lower-case post as it is) get a new quoted UUID per call; GET, HEAD, PUT, DELETE and OPTIONS none", async () => {
    const server = await recorder();
    const keyed = [];
    for (const method of ["POST", "PATCH", "post", "Patch"]) {
      const response = await idempotentFetch(server.url, { method, body: "{}" });
      expect(response.idempotencyKey, method).toMatch(UUID);
      keyed.push(response.idempotencyKey);
    }
    for (const method of ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]) {
      const response = await idempotentFetch(server.url, { method });
      expect(response.idempotencyKey, method).toBeNull();
    }
    // Node's HTTP parser refuses the method "Patch" (fetch upper-cases only the standard methods, PATCH is not
    // one of them): that request never reaches the recorder, but it was sent with its key all the same.
    const sent = server.requests.map((request) => request.headers["idempotency-key"]);
    expect(sent.slice(0, 3)).toEqual(keyed.slice(0, 3).map((key) => `"${key}"`));
    expect(new Set(keyed).size).toBe(4);
    expect(sent.slice(3)).toEqual([undefined, undefined, undefined, undefined, undefined]);
  });

  it("methods and header are configurable", async () => {
    const server = await recorder();
    const fetchWithRetries = createIdempotentFetch({ methods: ["POST", "put"], header: "X-Request-Key" });
    const put = await fetchWithRetries(server.url, { method: "PUT", body: "{}" });
    const patch = await fetchWithRetries(server.url, { method: "PATCH", body: "{}" });
    expect(put.idempotencyKey).toMatch(UUID);
    expect(patch.idempotencyKey).toBeNull();
    expect(server.requests[0]!.headers["x-request-key"]).toBe(`"${put.idempotencyKey}"`);
    expect(server.requests[0]!.headers["idempotency-key"]).toBeUndefined();
    expect(server.requests[1]!.headers["x-request-key"]).toBeUndefined();
  });

  it("the key option is sent as an sf-string, escaped, also on a method outside methods", async () => {
    const server = await recorder();
    const response = await idempotentFetch(
      server.url,
      { method: "POST", body: "{}" },
      { key: 'inv "7" \\ A' },
    );
    expect(response.idempotencyKey).toBe('inv "7" \\ A');
    expect(server.requests[0]!.headers["idempotency-key"]).toBe('"inv \\"7\\" \\\\ A"');
    const deleted = await idempotentFetch(server.url, { method: "DELETE" }, { key: "delete-order-1" });
    expect(deleted.idempotencyKey).toBe("delete-order-1");
    expect(server.requests[1]!.headers["idempotency-key"]).toBe('"delete-order-1"');
  });

  it("a key header the caller set is sent exactly as it is, and its key reported", async () => {
    const server = await recorder();
    const raw = await idempotentFetch(server.url, {
      method: "POST",
      headers: { "Idempotency-Key": "stripe_style_1" },
    });
    const quoted = await idempotentFetch(server.url, {
      method: "POST",
      headers: { "idempotency-key": '"quoted-1"' },
    });
    expect([raw.idempotencyKey, quoted.idempotencyKey]).toEqual(["stripe_style_1", "quoted-1"]);
    expect(server.requests.map((request) => request.headers["idempotency-key"])).toEqual([
      "stripe_style_1",
      '"quoted-1"',
    ]);
    // The same key in both places is fine; two different keys are a mistake.
    await idempotentFetch(
      server.url,
      { method: "POST", headers: { "idempotency-key": '"k-1"' } },
      { key: "k-1" },
    );
    const error = await idempotentFetch(
      server.url,
      { method: "POST", headers: { "idempotency-key": "k-1" } },
      { key: "k-2" },
    ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotentFetchOptionsError);
    expect((error as IdempotentFetchOptionsError).option).toBe("key");
    expect((error as Error).message).toContain(
      'already carries the Idempotency-Key header "k-1", which names another key',
    );
    expect(server.requests).toHaveLength(3);
  });

  it("keeps the caller's other headers and init members", async () => {
    const server = await recorder();
    await idempotentFetch(server.url, {
      method: "POST",
      headers: [
        ["authorization", "Bearer t"],
        ["x-tenant-id", "acme"],
      ],
      body: "{}",
      redirect: "error",
      cache: "no-store",
    });
    expect(server.requests[0]!.headers).toMatchObject({ authorization: "Bearer t", "x-tenant-id": "acme" });
  });
});

describe("against @idempotency/hono over a socket", () => {
  it("a lost response is replayed on the retry; the handler ran once", async () => {
    const app = new Hono();
    const events: string[] = [];
    let executions = 0;
    app.post(
      "/payments",
      idempotency({ store: new MemoryStore(), scope: "global", onEvent: (event) => events.push(event.type) }),
      async (c) => {
        executions++;
        const { amount } = await c.req.json();
        return c.json({ id: `pay_${executions}`, amount }, 201);
      },
    );
    const server = await new Promise<Running & { port: number }>((resolve) => {
      const running = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info: AddressInfo) =>
        resolve({
          url: `http://127.0.0.1:${info.port}`,
          port: info.port,
          close: () =>
            new Promise<void>((done) => {
              if ("closeAllConnections" in running) running.closeAllConnections();
              running.close(() => done());
            }),
        }),
      );
    });
    open.push(server);
    const proxy = await flakyProxy(server.port, ["lose-response"]);
    open.push(proxy);

    const response = await idempotentFetch(
      `${proxy.url}/payments`,
      { method: "POST", headers: { "content-type": "application/json" }, body: '{"amount":1200}' },
      { ...fakeClock().options, key: "invoice-2024-001" },
    );
    expect([response.status, response.replayed, response.attempts]).toEqual([201, true, 2]);
    expect(await response.json()).toEqual({ id: "pay_1", amount: 1200 });
    expect(executions).toBe(1);
    expect(events).toEqual(["claimed", "completed", "replayed"]);
  });
});
