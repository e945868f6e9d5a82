import { describe, expect, it } from "vitest";
import { createIdempotency, type Execution, MemoryStore } from "../src/index.js";
import { captureWebResponse } from "../src/web.js";
import { neutralRequest } from "./harness.js";

async function claim(store: MemoryStore, key: string): Promise<Execution> {
  const engine = createIdempotency({ store, scope: "global" });
  const decision = await engine.handle(neutralRequest({ key, body: "{}" }));
  if (decision.action !== "execute") throw new Error(`expected a claim, got ${decision.action}`);
  return decision.execution;
}

async function replayOf(store: MemoryStore, key: string) {
  const engine = createIdempotency({ store, scope: "global" });
  const decision = await engine.handle(neutralRequest({ key, body: "{}" }));
  if (decision.action !== "respond") throw new Error(`expected a replay, got ${decision.action}`);
  return decision.response;
}

describe("captureWebResponse", () => {
  it("sends and stores a known body without reading the response's stream or asking for the signal", async () => {
    const store = new MemoryStore();
    const execution = await claim(store, "k");
    const handlers = new Response("not this", {
      status: 201,
      headers: { "content-type": "application/json" },
    });
    let signalAsked = 0;
    const body = new TextEncoder().encode('{"id":1}');
    const sent = await captureWebResponse(
      handlers,
      execution,
      () => {
        signalAsked++;
        return new AbortController().signal;
      },
      { body, statusText: "" },
    );
    expect(handlers.bodyUsed).toBe(false);
    expect(signalAsked).toBe(0);
    expect([sent.status, sent.statusText, await sent.text()]).toEqual([201, "", '{"id":1}']);
    expect(sent.headers.get("content-length")).toBe("8");
    const replay = await replayOf(store, "k");
    expect([replay.status, Buffer.from(replay.body).toString()]).toEqual([201, '{"id":1}']);
  });

  it("treats a known null body as none, whatever the response's stream holds", async () => {
    const store = new MemoryStore();
    const execution = await claim(store, "k");
    const sent = await captureWebResponse(
      new Response("ignored", { status: 202 }),
      execution,
      () => {
        throw new Error("not needed");
      },
      { body: null, statusText: "" },
    );
    expect([sent.status, sent.body]).toEqual([202, null]);
    expect((await replayOf(store, "k")).body.length).toBe(0);
  });

  it("asks for the signal once the body turns out to be a stream still being produced", async () => {
    const store = new MemoryStore();
    const execution = await claim(store, "k");
    let release: () => void = () => {};
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("a"));
        release = () => {
          controller.enqueue(new TextEncoder().encode("b"));
          controller.close();
        };
      },
    });
    let signalAsked = 0;
    const sent = await captureWebResponse(new Response(stream), execution, () => {
      signalAsked++;
      return new AbortController().signal;
    });
    expect(signalAsked).toBe(1);
    const text = sent.text();
    release();
    expect(await text).toBe("ab");
    expect(Buffer.from((await replayOf(store, "k")).body).toString()).toBe("ab");
  });
});
