/**
 * Model test: random interleavings of concurrent requests (same and different keys, bodies, principals,
 * two engines over one store), handler failures, crashes, store-call orderings and clock advances, against
 * the engine over MemoryStore. Seeded and reproducible: set MODEL_SEED to replay a reported failure; fast-check
 * prints the shrunk command list.
 */
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { identityKey } from "../src/identity.js";
import {
  createIdempotency,
  decodeResponse,
  type Idempotency,
  type IdempotencyEvent,
  MemoryStore,
} from "../src/index.js";
import { instrumentedStore } from "../src/testing.js";
import { type Exchange, send } from "./harness.js";
import { deferred } from "./support.js";

const LEASE = 3_000;
const SEED = Number(process.env.MODEL_SEED ?? 20_261_129);

type Outcome = "ok" | "client-error" | "fail" | "throw" | "not-started" | "crash" | "stall";
/** Outcomes whose response is stored, unless (for a stall) another request took the key over first. */
const STORED: ReadonlySet<Outcome> = new Set(["ok", "client-error", "stall"]);
/** Outcomes whose lease may run out while they run, so another execution may legitimately overlap them. */
const MAY_LOSE_LEASE: ReadonlySet<Outcome> = new Set(["crash", "stall"]);

interface RequestSpec {
  principal: number;
  key: number;
  body: number;
  engine: number;
  outcome: Outcome;
}

type Command =
  | { kind: "start"; request: RequestSpec }
  | { kind: "finish"; pick: number }
  | { kind: "flush"; pick: number }
  | { kind: "advance"; ms: number };

const requestSpec = fc.record({
  principal: fc.integer({ min: 0, max: 1 }),
  key: fc.integer({ min: 0, max: 1 }),
  body: fc.constantFrom(0, 0, 0, 1),
  engine: fc.integer({ min: 0, max: 1 }),
  outcome: fc.constantFrom<Outcome>(
    "ok",
    "ok",
    "ok",
    "client-error",
    "fail",
    "throw",
    "not-started",
    "crash",
    "stall",
  ),
});

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: requestSpec.map((request) => ({ kind: "start" as const, request })) },
  { weight: 3, arbitrary: fc.nat(50).map((pick) => ({ kind: "finish" as const, pick })) },
  { weight: 4, arbitrary: fc.nat(50).map((pick) => ({ kind: "flush" as const, pick })) },
  {
    weight: 2,
    arbitrary: fc.integer({ min: 1, max: 4_000 }).map((ms) => ({ kind: "advance" as const, ms })),
  },
);

/** The race scheduler: every store call waits in `pending` until the model runs it, in the order it picks. */
function scheduledStore() {
  const pending: Array<() => void> = [];
  const store = instrumentedStore(new MemoryStore());
  store.gate = (run) => pending.push(run);
  return Object.assign(store, { pending });
}

interface Execution {
  identity: string;
  request: RequestSpec;
  run: number;
  finished: boolean;
  response?: { status: number; body: string };
}

interface InFlightRequest {
  spec: RequestSpec;
  release: () => void;
  exchange: Promise<Exchange>;
  done: boolean;
}

const identityOf = (spec: Pick<RequestSpec, "principal" | "key">) => `p${spec.principal}/k${spec.key}`;
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

class Model {
  readonly store = scheduledStore();
  readonly engines: Idempotency[];
  readonly executions: Execution[] = [];
  readonly requests: InFlightRequest[] = [];
  readonly violations: string[] = [];
  /** `completed` events per hashed identity: a second one means a record was overwritten. */
  readonly completions = new Map<string, number>();
  /** The first replayed body per identity: every later replay must equal it. */
  readonly replays = new Map<string, string>();
  runs = 0;

  constructor(waitMs: number) {
    const options = {
      onEvent: (event: IdempotencyEvent) => {
        if (event.type !== "completed") return;
        const count = (this.completions.get(event.key) ?? 0) + 1;
        this.completions.set(event.key, count);
        if (count > 1) this.violations.push(`record ${event.key.slice(0, 8)} completed ${count} times`);
      },
      store: this.store,
      scope: (request: { headers: { get(name: string): string | null } }) =>
        request.headers.get("x-principal") ?? "",
      leaseMs: LEASE,
      ttlMs: 3_600_000,
      waitMs,
    };
    this.engines = [createIdempotency(options), createIdempotency(options)];
  }

  start(spec: RequestSpec): InFlightRequest {
    const gate = deferred();
    const identity = identityOf(spec);
    const exchange = send(
      this.engines[spec.engine] as Idempotency,
      {
        key: `key-${spec.key}`,
        body: `{"item":${spec.body}}`,
        headers: { "x-principal": `principal-${spec.principal}`, "content-type": "application/json" },
      },
      async (res, context) => {
        const execution: Execution = { identity, request: spec, run: ++this.runs, finished: false };
        this.checkStart(execution);
        this.executions.push(execution);
        if (spec.outcome === "stall") context.stall();
        await gate.promise;
        execution.finished = true;
        switch (spec.outcome) {
          case "crash":
            context.stall();
            context.disconnect();
            await new Promise(() => {}); // the process died: no response, no more renewals
            return;
          case "throw":
            throw new Error("handler failed");
          case "not-started":
            context.notStarted();
            res.writeHead(403);
            await res.end("forbidden");
            return;
          default: {
            const status = spec.outcome === "fail" ? 500 : spec.outcome === "client-error" ? 400 : 201;
            const body = `${identity} body ${spec.body} run ${execution.run}`;
            execution.response = { status, body };
            res.writeHead(status, { "content-type": "text/plain" });
            await res.end(body);
          }
        }
      },
    );
    const request: InFlightRequest = { spec, release: gate.resolve, exchange, done: false };
    void exchange.then((result) => {
      request.done = true;
      this.checkAnswer(spec, result);
    });
    this.requests.push(request);
    return request;
  }

  /** An execution may start only when every earlier one of its identity ended unstored, or crashed. */
  checkStart(next: Execution): void {
    for (const earlier of this.executions) {
      if (earlier.identity !== next.identity) continue;
      if (MAY_LOSE_LEASE.has(earlier.request.outcome)) continue;
      if (!earlier.finished)
        this.violations.push(`run ${next.run} overlapped run ${earlier.run} (${next.identity})`);
      else if (STORED.has(earlier.request.outcome))
        this.violations.push(`run ${next.run} ran after run ${earlier.run} was stored (${next.identity})`);
    }
  }

  /** Every replay equals the stored response byte for byte; no 5xx except from the request's own handler. */
  checkAnswer(spec: RequestSpec, exchange: Exchange): void {
    const { status } = exchange.response;
    const text = exchange.response.text();
    if (exchange.action === "execute") {
      const own = spec.outcome === "fail" || spec.outcome === "throw";
      if (status >= 500 && !own) this.violations.push(`an execution answered ${status}: ${text}`);
      return;
    }
    if (exchange.response.headers["idempotent-replayed"] === "true") {
      const identity = identityOf(spec);
      const source = this.executions.find(
        (execution) => execution.identity === identity && execution.response?.body === text,
      );
      if (!source?.response || !STORED.has(source.request.outcome) || source.response.status !== status)
        this.violations.push(`replay ${status} "${text}" is no stored response of ${identity}`);
      else if (source.request.body !== spec.body)
        this.violations.push(`body ${spec.body} replayed the response to body ${source.request.body}`);
      const first = this.replays.get(identity) ?? text;
      this.replays.set(identity, first);
      if (first !== text) this.violations.push(`${identity} replayed "${first}", later "${text}"`);
      return;
    }
    if (status !== 409 && status !== 422) this.violations.push(`unexpected answer ${status}: ${text}`);
  }

  async flush(pick: number): Promise<void> {
    if (this.store.pending.length === 0) return;
    const [call] = this.store.pending.splice(pick % this.store.pending.length, 1);
    call?.();
    await settle();
  }

  async flushAll(): Promise<void> {
    while (this.store.pending.length > 0) await this.flush(0);
  }

  async finish(pick: number): Promise<void> {
    const open = this.requests.filter((request) => !request.done && request.spec.outcome !== "crash");
    open
      .concat(this.requests.filter((request) => request.spec.outcome === "crash"))
      [pick % Math.max(1, this.requests.length)]?.release();
    await settle();
  }

  /**
   * Moves the clock in 50 ms steps and answers every store call between steps: a live store answers within
   * 50 ms, well inside storeTimeoutMs, and a live process's renewals never stall for a whole lease.
   */
  async advance(ms: number): Promise<void> {
    for (let left = ms; left > 0; left -= 50) {
      await this.flushAll();
      await vi.advanceTimersByTimeAsync(Math.min(50, left));
      await settle();
    }
    await this.flushAll();
  }

  /** Lets every live request finish and every crashed lease expire. */
  async drain(): Promise<void> {
    for (let round = 0; round < 50; round++) {
      for (const request of this.requests) request.release();
      await this.flushAll();
      await settle();
      const open = this.requests.some((request) => !request.done && request.spec.outcome !== "crash");
      if (!open && this.store.pending.length === 0) break;
      await this.advance(100);
    }
    await this.advance(LEASE + 1);
    await this.flushAll();
  }
}

async function runModel(commands: Command[], waitMs: number): Promise<void> {
  const model = new Model(waitMs);
  for (const step of commands) {
    if (step.kind === "start") {
      model.start(step.request);
      await settle();
    } else if (step.kind === "finish") await model.finish(step.pick);
    else if (step.kind === "flush") await model.flush(step.pick);
    else await model.advance(step.ms);
  }
  await model.drain();
  const open = model.requests.filter((request) => !request.done && request.spec.outcome !== "crash");
  expect(open.map((request) => request.spec)).toEqual([]);

  // Liveness: a retry of every identity replays its stored response, or runs when nothing was stored.
  const identities = new Set(model.requests.map((request) => identityOf(request.spec)));
  for (const identity of identities) {
    const base = model.requests.find((request) => identityOf(request.spec) === identity)?.spec as RequestSpec;
    const hashed = identityKey(`principal-${base.principal}`, "POST", "/orders", `key-${base.key}`);
    const record = await model.store.inner.get(hashed);
    const stored = record?.state === "completed";
    expect(model.completions.get(hashed) ?? 0, `${identity} completions`).toBe(stored ? 1 : 0);
    const storedText =
      record?.state === "completed" && record.response
        ? Buffer.from(decodeResponse(record.response).body ?? []).toString()
        : undefined;
    const storedBody = model.executions.find((execution) => execution.response?.body === storedText)?.request
      .body;
    if (stored)
      expect(storedBody, `${identity} holds a response one of its executions produced`).toBeDefined();
    const retry = model.start({
      ...base,
      body: stored ? (storedBody ?? base.body) : base.body,
      outcome: "ok",
    });
    for (let i = 0; i < 50 && !retry.done; i++) {
      retry.release();
      await model.flushAll();
      if (!retry.done) await model.advance(100);
    }
    expect(retry.done, `${identity} retry settles`).toBe(true);
    const result = await retry.exchange;
    if (stored) {
      expect(result.response.headers["idempotent-replayed"], `${identity} replays`).toBe("true");
    } else {
      expect([result.action, result.response.status], `${identity} runs again`).toEqual(["execute", 201]);
    }
  }
  expect(model.violations).toEqual([]);
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
  vi.setSystemTime(Date.UTC(2026, 0, 1));
});

afterEach(() => {
  vi.useRealTimers();
});

describe(`model: random interleavings against MemoryStore (seed ${SEED})`, () => {
  for (const waitMs of [0, 2_000]) {
    it(`keeps every invariant with waitMs ${waitMs}`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 60 }), (commands) =>
          runModel(commands, waitMs),
        ),
        { seed: SEED + waitMs, numRuns: 300 },
      );
    }, 120_000);
  }
});
