/**
 * The middleware on Hono's Web-standard entry point, `app.fetch` / `app.request`, with the runtime's own
 * `Request` and `Response` and no Node server in between: how it runs on Bun, Deno and other fetch runtimes.
 */
import { MemoryStore } from "@idempotency/core";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";

function post(key: string, body: unknown): RequestInit {
  return {
    method: "POST",
    headers: { "idempotency-key": key, "content-type": "application/json" },
    body: JSON.stringify(body),
  };
}

describe("app.request() without a Node server", () => {
  it("runs, replays, refuses a reused key and a duplicate in flight", async () => {
    const app = new Hono();
    let executions = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let slowClaimed!: () => void;
    const claimed = new Promise<void>((resolve) => {
      slowClaimed = resolve;
    });
    app.use(
      idempotency({
        store: new MemoryStore(),
        scope: "global",
        onEvent: (event) => {
          if (event.type === "claimed" && event.path === "/slow") slowClaimed();
        },
      }),
    );
    app.post("/orders", async (c) => {
      executions++;
      const { item } = await c.req.json();
      return c.json({ id: executions, item }, 201, { Location: `/orders/${executions}` });
    });
    app.post("/slow", async (c) => {
      await gate;
      return c.text("slow done", 201);
    });

    const first = await app.request("/orders", post("k", { item: "a", qty: 1 }));
    expect(first.headers.get("content-length")).toBe("19");
    // A complete body is stored before app.request() resolves: the retry needs no read of the first body.
    const replay = await app.request("/orders", post("k", { qty: 1, item: "a" }));
    expect([first.status, await first.text()]).toEqual([201, '{"id":1,"item":"a"}']);
    const reused = await app.request("/orders", post("k", { item: "b", qty: 1 }));
    expect([replay.status, await replay.text()]).toEqual([201, '{"id":1,"item":"a"}']);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.headers.get("location")).toBe("/orders/1");
    expect(reused.status).toBe(422);
    expect(reused.headers.get("content-type")).toBe("application/problem+json");
    expect(executions).toBe(1);

    const running = app.request("/slow", post("s", {}));
    await claimed;
    const duplicate = await app.request("/slow", post("s", {}));
    expect(duplicate.status).toBe(409);
    expect(Number(duplicate.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    release();
    expect(await (await running).text()).toBe("slow done");
    const slowReplay = await app.request("/slow", post("s", {}));
    expect([await slowReplay.text(), slowReplay.headers.get("idempotent-replayed")]).toEqual([
      "slow done",
      "true",
    ]);
  });

  it("captures a streamed body read by the caller chunk by chunk", async () => {
    const app = new Hono();
    let executions = 0;
    app.post("/stream", idempotency({ store: new MemoryStore(), scope: "global" }), () => {
      executions++;
      const parts = ["alpha;", "beta;", "gamma"];
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          const part = parts.shift();
          if (part === undefined) controller.close();
          else controller.enqueue(new TextEncoder().encode(part));
        },
      });
      return new Response(body, { headers: { "content-type": "text/plain" } });
    });

    const first = await app.request("/stream", post("k", {}));
    expect(first.headers.get("content-length")).toBeNull();
    const received: string[] = [];
    const decoder = new TextDecoder();
    const reader = first.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received.push(decoder.decode(value));
    }
    expect(received.join("")).toBe("alpha;beta;gamma");
    const replay = await app.request("/stream", post("k", {}));
    expect([await replay.text(), replay.headers.get("content-length")]).toEqual(["alpha;beta;gamma", "16"]);
    expect(executions).toBe(1);
  });

  it("stores a body nobody reads once the request's signal says the client left", async () => {
    const app = new Hono();
    let executions = 0;
    let completed!: () => void;
    const stored = new Promise<void>((resolve) => {
      completed = resolve;
    });
    const onEvent = (event: { type: string }) => {
      if (event.type === "completed") completed();
    };
    app.post("/stream", idempotency({ store: new MemoryStore(), scope: "global", onEvent }), () => {
      executions++;
      const parts = ["one;", "two;", "three"];
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          const part = parts.shift();
          if (part === undefined) controller.close();
          else controller.enqueue(new TextEncoder().encode(part));
        },
      });
      return new Response(body);
    });

    const client = new AbortController();
    const request = new Request("http://localhost/stream", { ...post("k", {}), signal: client.signal });
    const abandoned = await app.fetch(request);
    expect(abandoned.status).toBe(200);
    client.abort(); // the runtime neither reads nor cancels the body
    await stored;
    const replay = await app.request("/stream", post("k", {}));
    expect([await replay.text(), replay.headers.get("idempotent-replayed")]).toEqual([
      "one;two;three",
      "true",
    ]);
    expect(executions).toBe(1);
  });
});
