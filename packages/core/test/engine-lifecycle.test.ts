import { describe, expect, it, vi } from "vitest";
import { MemoryStore, PROBLEM_TYPES } from "../src/index.js";
import { type Handler, send } from "./harness.js";
import { deferred, events, eventTypes, instrumentedStore, store, T0, useEngineFixture } from "./support.js";

const LEASE = 3_000;

const engine = useEngineFixture({ leaseMs: LEASE });

/** A handler that waits for `gate` (or `ms` of fake time), counts its runs and answers with its run number. */
function slowHandler(wait: { gate?: Promise<void>; ms?: number }, status = 201) {
  const handler = Object.assign(
    async (res: Parameters<Handler>[0]) => {
      const run = ++handler.runs;
      if (wait.gate) await wait.gate;
      if (wait.ms) await new Promise((resolve) => setTimeout(resolve, wait.ms));
      res.writeHead(status, { "content-type": "text/plain" });
      await res.end(`run ${run}`);
    },
    { runs: 0 },
  );
  return handler;
}

describe("in flight", () => {
  it("answers 409 with Retry-After: the retryAfterMs hint (1 s), not the whole lease left", async () => {
    const idempotency = engine();
    const gate = deferred();
    const handler = slowHandler({ gate: gate.promise });
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(500);
    const duplicate = await send(idempotency, { key: "k" }, handler);
    expect(duplicate.response.status).toBe(409);
    expect(duplicate.response.headers["retry-after"]).toBe("1");
    expect(duplicate.response.json()).toEqual({
      type: PROBLEM_TYPES.inProgress,
      title: "Request in progress",
      status: 409,
      detail:
        "A request with this Idempotency-Key is still being processed. Retry after 1 s to get its result.",
    });
    gate.resolve();
    expect((await first).response.text()).toBe("run 1");
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.text()).toBe("run 1");
    expect(handler.runs).toBe(1);
    expect(eventTypes()).toEqual(["claimed", "in-progress", "completed", "replayed"]);
  });

  it("never sends a Retry-After below 1 second", async () => {
    const idempotency = engine({ leaseMs: 900 });
    const gate = deferred();
    const first = send(idempotency, { key: "k" }, slowHandler({ gate: gate.promise }));
    await vi.advanceTimersByTimeAsync(250); // 650 ms left on the lease
    const duplicate = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(duplicate.response.headers["retry-after"]).toBe("1");
    expect(events.at(-1)).toMatchObject({ type: "in-progress", leaseRemainingMs: 650 });
    gate.resolve();
    await first;
  });

  it("runs the handler exactly once among 200 concurrent duplicates", async () => {
    const idempotency = engine();
    const gate = deferred();
    const handler = slowHandler({ gate: gate.promise });
    const all = Array.from({ length: 200 }, () => send(idempotency, { key: "k", body: "same" }, handler));
    await vi.advanceTimersByTimeAsync(0);
    gate.resolve();
    const statuses = (await Promise.all(all)).map((exchange) => exchange.response.status).sort();
    expect(handler.runs).toBe(1);
    expect(statuses.filter((status) => status === 201)).toHaveLength(1);
    expect(statuses.filter((status) => status === 409)).toHaveLength(199);
  });

  it("renews the lease: a duplicate at 2.5x the lease of a handler running 3x the lease still gets 409", async () => {
    const idempotency = engine();
    const handler = slowHandler({ ms: 3 * LEASE });
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(2.5 * LEASE);
    const duplicate = await send(idempotency, { key: "k" }, handler);
    expect(duplicate.response.status).toBe(409);
    expect(Number(duplicate.response.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    await vi.advanceTimersByTimeAsync(0.5 * LEASE);
    expect((await first).response.status).toBe(201);
    expect(handler.runs).toBe(1);
    expect(store.calls.extend).toBe(9); // every leaseMs / 3 during 3x the lease
    expect((await send(idempotency, { key: "k" }, handler)).response.headers["idempotent-replayed"]).toBe(
      "true",
    );
  });

  it("stops renewing when the response has ended", async () => {
    const idempotency = engine();
    const first = send(idempotency, { key: "k" }, slowHandler({ ms: LEASE }));
    await vi.advanceTimersByTimeAsync(LEASE);
    await first;
    const renewals = store.calls.extend;
    await vi.advanceTimersByTimeAsync(10 * LEASE);
    expect(store.calls.extend).toBe(renewals);
  });

  it("keeps renewing after the client left (its own timeout), and stores the response produced later", async () => {
    const idempotency = engine();
    const gate = deferred();
    let disconnect: () => void = () => {};
    const first = send(idempotency, { key: "k" }, async (res, context) => {
      disconnect = context.disconnect;
      await gate.promise;
      res.writeHead(201);
      await res.end("made it");
    });
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    expect(store.calls.extend).toBe(1);
    disconnect();
    // The client retries while the handler still runs, for three whole leases: always 409, never a rerun.
    const retryHandler = slowHandler({});
    for (let tick = 0; tick < 9; tick++) {
      await vi.advanceTimersByTimeAsync(LEASE / 3);
      const retry = await send(idempotency, { key: "k" }, retryHandler);
      expect(retry.response.status).toBe(409);
    }
    expect(retryHandler.runs).toBe(0);
    expect(store.calls.extend).toBe(10);
    gate.resolve();
    expect((await first).response.body.length).toBe(0); // the client had gone
    const retry = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(retry.response.status).toBe(201);
    expect(retry.response.text()).toBe("made it");
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
  });
});

describe("crash, takeover and fencing", () => {
  it("caps the Retry-After hint at the lease left, in whole seconds rounded up", async () => {
    const idempotency = engine({ retryAfterMs: 10_000 });
    const gate = deferred();
    const handler = slowHandler({ gate: gate.promise });
    const first = send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(500); // 2500 ms left on the lease (renewed at 1000)
    const duplicate = await send(idempotency, { key: "k" }, handler);
    expect(duplicate.response.headers["retry-after"]).toBe("3");
    gate.resolve();
    await first;
  });

  it("takes over after the lease of a crashed request expires, and fences the stale owner", async () => {
    const idempotency = engine();
    const staleGate = deferred();
    let crash: () => void = () => {};
    const stale = send(idempotency, { key: "k" }, async (res, context) => {
      crash = context.stall; // stands in for a dead process: no renewal, no release
      await staleGate.promise;
      res.writeHead(201);
      await res.end("stale result");
    });
    await vi.advanceTimersByTimeAsync(0);
    crash();
    await vi.advanceTimersByTimeAsync(LEASE - 1);
    expect((await send(idempotency, { key: "k" }, slowHandler({}))).response.status).toBe(409);
    await vi.advanceTimersByTimeAsync(1);

    const takeover = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(takeover.response.status).toBe(201);
    expect(takeover.response.text()).toBe("run 1");
    expect(events.filter((event) => event.type === "claimed").map((event) => event)).toMatchObject([
      { takeover: false },
      { takeover: true },
    ]);

    staleGate.resolve();
    await stale;
    expect(events.at(-1)).toMatchObject({ type: "lease-lost", operation: "complete" });
    const retry = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(retry.response.text()).toBe("run 1");
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
  });

  it("delivers the stale owner's response to its own client even though it cannot store it", async () => {
    // Two processes over the same records; process A loses its connection to the store while its handler runs.
    const shared = new MemoryStore();
    const storeA = instrumentedStore(shared);
    const processA = engine({ store: storeA });
    const processB = engine({ store: instrumentedStore(shared) });
    const gate = deferred();
    const stale = send(processA, { key: "k" }, async (res) => {
      await gate.promise;
      res.writeHead(201, { "content-type": "text/plain" });
      await res.end("stale result");
    });
    await vi.advanceTimersByTimeAsync(0);
    storeA.down = true; // renewals fail; the lease runs out
    await vi.advanceTimersByTimeAsync(LEASE);
    const takeover = await send(processB, { key: "k" }, slowHandler({}));
    expect(takeover.response.text()).toBe("run 1");
    storeA.down = false;
    gate.resolve();
    const { response } = await stale;
    expect(response.status).toBe(201);
    expect(response.text()).toBe("stale result");
    expect(events.at(-1)).toMatchObject({ type: "lease-lost", operation: "complete" });
    const retry = await send(processA, { key: "k" }, slowHandler({}));
    expect(retry.response.text()).toBe("run 1");
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
  });

  it("lets a request whose lease expired complete when nobody took the key over: fencing is by token", async () => {
    const idempotency = engine();
    const gate = deferred();
    const slow = send(idempotency, { key: "k" }, async (res, context) => {
      context.stall(); // no renewal reaches the store from here on
      await gate.promise;
      res.writeHead(201);
      await res.end("late but alone");
    });
    await vi.advanceTimersByTimeAsync(5 * LEASE);
    gate.resolve();
    await slow;
    expect(events.at(-1)).toMatchObject({ type: "completed", status: 201 });
    const retry = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(retry.response.text()).toBe("late but alone");
  });

  it("reports lease-lost from renewal when another request took the key over, and stores nothing", async () => {
    const idempotency = engine();
    const gate = deferred();
    const slow = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      res.writeHead(201);
      await res.end("slow");
    });
    await vi.advanceTimersByTimeAsync(0);
    const claimed = events.find((event) => event.type === "claimed");
    // An operator deletes the in-flight record; someone else claims the key.
    await store.inner.delete(claimed?.key ?? "");
    const other = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(other.response.text()).toBe("run 1");
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    expect(events.at(-1)).toMatchObject({ type: "lease-lost", operation: "extend" });
    const completes = store.calls.complete;
    gate.resolve();
    await slow;
    expect(store.calls.complete).toBe(completes);
    expect((await send(idempotency, { key: "k" }, slowHandler({}))).response.text()).toBe("run 1");
  });

  it('onLeaseExpired: "conflict" answers 409 after the lease until the TTL, then runs again', async () => {
    const idempotency = engine({ onLeaseExpired: "conflict", ttlMs: 60_000 });
    send(idempotency, { key: "k" }, async (_res, context) => {
      context.stall();
      context.disconnect();
      await new Promise(() => {}); // never finishes: a crashed process
    });
    await vi.advanceTimersByTimeAsync(LEASE * 2);
    const blocked = await send(idempotency, { key: "k" }, slowHandler({}));
    expect(blocked.response.status).toBe(409);
    // "Do not retry": its own problem type, and no Retry-After that a client would loop on.
    expect(blocked.response.headers["retry-after"]).toBeUndefined();
    expect(blocked.response.json()).toEqual({
      type: PROBLEM_TYPES.keyLocked,
      title: "Idempotency key locked",
      status: 409,
      detail:
        "A request with this Idempotency-Key stopped without a result, and this service never runs such a request " +
        "twice; the key stays locked until its record expires. Do not retry it; use a new key for a new attempt.",
    });
    await vi.advanceTimersByTimeAsync(60_000 - LEASE * 2);
    const handler = slowHandler({});
    expect((await send(idempotency, { key: "k" }, handler)).response.status).toBe(201);
    expect(handler.runs).toBe(1);
  });
});

describe("which outcomes are stored", () => {
  const cases: Array<[number, boolean]> = [
    [200, true],
    [201, true],
    [202, true],
    [302, true],
    [400, true],
    [404, true],
    [408, false],
    [409, false],
    [422, true],
    [425, false],
    [429, false],
    [500, false],
    [503, false],
  ];
  for (const [status, stored] of cases) {
    it(`${stored ? "stores and replays" : "releases, so a retry runs again,"} a final ${status}`, async () => {
      const idempotency = engine();
      const handler = slowHandler({}, status);
      await send(idempotency, { key: "k" }, handler);
      const retry = await send(idempotency, { key: "k" }, handler);
      expect(retry.response.status).toBe(status);
      expect(handler.runs).toBe(stored ? 1 : 2);
      expect(retry.response.headers["idempotent-replayed"]).toBe(stored ? "true" : undefined);
    });
  }

  it("follows a custom shouldStore", async () => {
    const idempotency = engine({ shouldStore: (status) => status === 201 });
    const handler = slowHandler({}, 400);
    await send(idempotency, { key: "k" }, handler);
    await send(idempotency, { key: "k" }, handler);
    expect(handler.runs).toBe(2);
  });

  it("releases when the handler throws and the error handler answers 500; the retry runs", async () => {
    const idempotency = engine();
    let runs = 0;
    const handler: Handler = async (res) => {
      runs++;
      if (runs === 1) throw new Error("payment gateway timeout");
      res.writeHead(201);
      await res.end("ok");
    };
    const first = await send(idempotency, { key: "k" }, handler);
    expect(first.response.status).toBe(500);
    expect(events.at(-1)).toMatchObject({ type: "released", status: 500, reason: "not-stored" });
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.status).toBe(201);
    expect(runs).toBe(2);
  });

  it("releases when the handler finishes without any response", async () => {
    const idempotency = engine();
    const handler = Object.assign(async () => void handler.runs++, { runs: 0 });
    await send(idempotency, { key: "k" }, handler);
    expect(events.at(-1)).toMatchObject({ type: "released", status: null, reason: "no-response" });
    await send(idempotency, { key: "k" }, handler);
    expect(handler.runs).toBe(2);
  });

  it("notStarted releases the claim and stores nothing, whatever the status", async () => {
    const idempotency = engine();
    let runs = 0;
    const handler: Handler = async (res, context) => {
      runs++;
      context.notStarted();
      res.writeHead(400, { "content-type": "application/json" });
      await res.end('{"error":"card declined before charge"}');
    };
    const first = await send(idempotency, { key: "k" }, handler);
    expect(first.response.status).toBe(400);
    expect(first.response.text()).toBe('{"error":"card declined before charge"}');
    expect(events.at(-1)).toMatchObject({ type: "not-started", status: 400 });
    await send(idempotency, { key: "k" }, handler);
    expect(runs).toBe(2);
  });
});

describe("the record is completed before the response finishes reaching the client", () => {
  it("holds back the end of a chunked response until complete returns", async () => {
    const timeline: string[] = [];
    const idempotency = engine({ onEvent: (event) => timeline.push(`event:${event.type}`) });
    await send(
      idempotency,
      { key: "k" },
      async (res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("hello ");
        await res.end("world");
      },
      timeline,
    );
    expect(timeline).toEqual([
      "event:claimed",
      "client:head 200",
      "client:data 6",
      "event:completed",
      "client:data 5",
      "client:end",
    ]);
  });

  it("stores each chunk as it was written, also when the handler reuses its Buffer afterwards", async () => {
    const idempotency = engine();
    const first = await send(idempotency, { key: "k" }, async (res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      const chunk = Buffer.from("abcdef");
      res.write(chunk);
      chunk.fill(0x78); // the handler reuses its buffer: "xxxxxx"
      await res.end("!");
    });
    expect(first.action).toBe("execute");
    const replay = await send(idempotency, { key: "k" }, () => {
      throw new Error("a replay must not run the handler");
    });
    expect(replay.action).toBe("respond");
    expect(replay.response.status).toBe(200);
    expect(replay.response.text()).toBe("abcdef!");
  });

  it("holds back the last byte of a Content-Length body written in full before end", async () => {
    const timeline: string[] = [];
    const idempotency = engine({ onEvent: (event) => timeline.push(`event:${event.type}`) });
    const exchange = await send(
      idempotency,
      { key: "k" },
      async (res) => {
        res.writeHead(200, { "content-type": "text/plain", "content-length": "10" });
        res.write("01234");
        res.write("56789");
        await res.end();
      },
      timeline,
    );
    expect(timeline).toEqual([
      "event:claimed",
      "client:head 200",
      "client:data 5",
      "client:data 4",
      "event:completed",
      "client:data 1",
      "client:end",
    ]);
    expect(exchange.response.text()).toBe("0123456789");
  });

  it("sends a whole Content-Length body given to end only after complete", async () => {
    const timeline: string[] = [];
    const idempotency = engine({ onEvent: (event) => timeline.push(`event:${event.type}`) });
    await send(
      idempotency,
      { key: "k" },
      async (res) => {
        res.writeHead(201, { "content-length": "2" });
        await res.end("ok");
      },
      timeline,
    );
    expect(timeline).toEqual([
      "event:claimed",
      "event:completed",
      "client:head 201",
      "client:data 2",
      "client:end",
    ]);
  });

  it("streams chunks to the client as they are produced; only the end waits for the store", async () => {
    const timeline: string[] = [];
    const idempotency = engine({ onEvent: (event) => timeline.push(`event:${event.type}`) });
    const produced: string[] = [];
    const exchange = send(
      idempotency,
      { key: "k" },
      async (res) => {
        res.setHeader("content-type", "text/event-stream");
        for (let i = 0; i < 3; i++) {
          res.write(`tick ${i}\n`);
          produced.push(`tick ${i}`);
          timeline.push(`handler:wrote ${i}`);
          await new Promise((resolve) => setTimeout(resolve, 1_000));
        }
        await res.end();
      },
      timeline,
    );
    await vi.advanceTimersByTimeAsync(3_000);
    await exchange;
    expect(timeline).toEqual([
      "event:claimed",
      "client:head 200",
      "client:data 7",
      "handler:wrote 0",
      "client:data 7",
      "handler:wrote 1",
      "client:data 7",
      "handler:wrote 2",
      "event:completed",
      "client:end",
    ]);
    const retry = await send(idempotency, { key: "k" }, async () => {});
    expect(retry.response.text()).toBe("tick 0\ntick 1\ntick 2\n");
  });

  it("stores the handler's result when the client disconnects mid-stream; the retry replays it whole", async () => {
    const idempotency = engine();
    const first = await send(idempotency, { key: "k" }, async (res, context) => {
      res.writeHead(200);
      res.write("part one, ");
      context.disconnect();
      await res.end("part two");
    });
    expect(first.response.text()).toBe("part one, ");
    const retry = await send(idempotency, { key: "k" }, async () => {});
    expect(retry.response.text()).toBe("part one, part two");
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
  });
});

describe("store down", () => {
  it("answers 503 problem+json with Retry-After and does not run the handler (fail-closed)", async () => {
    const idempotency = engine();
    store.down = true;
    const handler = slowHandler({});
    const { response } = await send(idempotency, { key: "k" }, handler);
    expect(response.status).toBe(503);
    expect(response.headers["retry-after"]).toBe("1");
    expect(response.json()).toEqual({
      type: PROBLEM_TYPES.storeUnavailable,
      title: "Idempotency store unavailable",
      status: 503,
      detail:
        "The request was not processed because its idempotency record could not be checked. Retry it with the " +
        "same key later.",
    });
    expect(handler.runs).toBe(0);
    const event = events.at(-1);
    expect(event).toMatchObject({ type: "store-error", operation: "begin" });
    expect(event?.type === "store-error" && event.error.code).toBe("ERR_IDEMPOTENCY_STORE");
  });

  it("still delivers the response when complete fails, and reports store-error", async () => {
    const idempotency = engine();
    const gate = deferred();
    const first = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      res.writeHead(201);
      await res.end("charged");
    });
    await vi.advanceTimersByTimeAsync(0);
    store.down = true;
    gate.resolve();
    await vi.advanceTimersByTimeAsync(300); // the two retries wait 100 ms and 200 ms
    expect((await first).response.text()).toBe("charged");
    expect(store.calls.complete).toBe(3);
    expect(eventTypes()).toEqual(["claimed", "store-error"]);
    expect(events.at(-1)).toMatchObject({ type: "store-error", operation: "complete" });
  });

  it("keeps renewing through a transient extend failure", async () => {
    const idempotency = engine();
    const first = send(idempotency, { key: "k" }, slowHandler({ ms: 2 * LEASE }));
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    store.down = true;
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    store.down = false;
    await vi.advanceTimersByTimeAsync(LEASE / 3);
    expect(events.map((event) => event.type)).toEqual(["claimed", "store-error"]);
    await vi.advanceTimersByTimeAsync(LEASE);
    expect((await first).response.status).toBe(201);
    expect(events.at(-1)).toMatchObject({ type: "completed", status: 201 });
  });
});

describe("events", () => {
  it("carry the hashed identity, method, path and timings", async () => {
    const idempotency = engine();
    const exchange = send(idempotency, { key: "k", path: "/charges" }, async (res) => {
      await new Promise((resolve) => setTimeout(resolve, 250));
      res.writeHead(201);
      await res.end("x");
    });
    await vi.advanceTimersByTimeAsync(250);
    await exchange;
    const [claimed, completed] = events;
    expect(claimed).toMatchObject({
      type: "claimed",
      method: "POST",
      path: "/charges",
      at: T0,
      elapsedMs: 0,
    });
    expect(completed).toMatchObject({
      type: "completed",
      status: 201,
      bodyBytes: 1,
      bodyStored: true,
      elapsedMs: 250,
      at: T0 + 250,
    });
    expect(completed?.key).toBe(claimed?.key);
  });

  it("a throwing onEvent never changes the answer", async () => {
    const idempotency = engine({
      onEvent: () => {
        throw new Error("logger down");
      },
    });
    const handler = slowHandler({});
    expect((await send(idempotency, { key: "k" }, handler)).response.status).toBe(201);
    expect((await send(idempotency, { key: "k" }, handler)).response.headers["idempotent-replayed"]).toBe(
      "true",
    );
  });
});
