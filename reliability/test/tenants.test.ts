/**
 * Tenants: two principals (`x-tenant`, the server's scope) that use the same key with different bodies get
 * two independent executions: no 409, no 422, never a replay of the other's response, also when they race.
 * A principal probing another's keys, completed or still running, with the other's exact body or another,
 * learns nothing: it gets what an unknown key gets (its own fresh execution, 201), in the same timing class.
 * Tenant ids that are prefixes of each other, differ only in a separator, or are long or non-ASCII (as far
 * as a header can carry them) stay apart. On every binding and every store.
 */
import { Agent } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { STORES, StoreFixture } from "./support/fixture.js";
import { SEED, seeded } from "./support/random.js";
import { report, tally } from "./support/report.js";
import {
  BINDINGS,
  type Binding,
  problemType,
  type Reply,
  type Send,
  ServerProcess,
  send,
} from "./support/servers.js";

const A = "tenant-a";
const B = "tenant-b";
/** Keys both tenants race on, and requests per tenant per key. */
const RACED_KEYS = 6;
const RACERS = 3;
/** Keys tenant A completes / holds in flight for B's probes (half probed with A's body, half with another). */
const PROBED_KEYS = 6;
/** Timing samples per class (A's completed key, A's in-flight key, an unknown key). */
const TIMING_SAMPLES = 30;
/** The probing tenant's median latency on A's keys must stay within this of its median on unknown keys. */
const timingBoundMs = (unknownMedianMs: number) => 0.35 * unknownMedianMs + 2;

/** UTF-8 bytes as a header value: Node sends each char below 256 as one byte, and servers read it back alike. */
const utf8Bytes = (text: string) => Buffer.from(text, "utf8").toString("latin1");
/** Tenant ids a header can carry that a careless scope encoding could merge. */
const AWKWARD_PAIRS: Array<[string, string]> = [
  ["a", "a:b"],
  ["a:b", "a|b"],
  ["a|b", "a"],
  ["1", "01"],
  ["a b", "a\tb"],
  ["-", "_"],
  ["anonymous", "Anonymous"],
  ["x".repeat(2_000), "x".repeat(2_001)],
  ["t\u00e9", utf8Bytes("t\u00e9")], // é as one Latin-1 byte, and as its two UTF-8 bytes
  [utf8Bytes("\u79df\u6237"), utf8Bytes("\u79df\u6236")], // 租户 / 租戶
];

const IN_PROGRESS = "urn:idempotency:problem:in-progress";
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1] as number;
};

/** What a client can tell from a reply without its body: status, replay mark, problem type. */
const shape = (reply: Reply) =>
  `${reply.status}${reply.headers["idempotent-replayed"] === "true" ? " replayed" : ""}${problemType(reply) ? ` ${problemType(reply)}` : ""}`;

describe.each(STORES)("tenants on one %s store", (storeKind) => {
  let fixture: StoreFixture;
  const servers = new Map<Binding, ServerProcess>();

  beforeAll(async () => {
    fixture = await StoreFixture.open(storeKind, "tenants");
    await Promise.all(
      BINDINGS.map(async (binding) => {
        servers.set(binding, await ServerProcess.start({ binding, ...fixture.config() }));
      }),
    );
  });

  afterAll(async () => {
    await Promise.all([...servers.values()].map((server) => server.stop()));
    await fixture?.close();
  });

  it.each(BINDINGS)(
    "%s: the same key from two tenants runs twice, once each, racing or not; probing another tenant's keys answers as an unknown key does, in the same timing class",
    async (binding) => {
      const server = servers.get(binding) as ServerProcess;
      const port = server.port;
      const { ledger } = fixture;
      const prefix = `${storeKind}-${binding}-tenants-${SEED}`;
      const bodyOf = (tenant: string, key: string) => JSON.stringify({ key, order: `${tenant}'s order` });
      const checked = new Set<string>();
      const rowsOf = (key: string, tenant: string) => {
        checked.add(`${tenant}\n${key}`);
        return ledger.of(key).filter((row) => row.tenant === tenant);
      };
      let requests = 0;
      const post = (key: string, tenant: string, extra: Omit<Send, "port" | "key" | "tenant"> = {}) => {
        requests++;
        return send({ port, key, tenant, body: extra.body ?? bodyOf(tenant, key), ...extra });
      };
      /** A reply that is the tenant's own first execution of `key` (not a replay), as the ledger recorded it. */
      const expectOwnExecution = (reply: Reply, key: string, tenant: string) => {
        expect(shape(reply), reply.body.toString("utf8")).toBe("201");
        const rows = rowsOf(key, tenant);
        expect(rows).toHaveLength(1);
        expect(reply.body.toString("utf8")).toBe(rows[0]?.body);
        expect(reply.headers["x-execution"]).toBe(rows[0]?.execution);
      };
      const expectOwnReplay = (reply: Reply, key: string, tenant: string) => {
        expect(shape(reply)).toBe("201 replayed");
        expect(reply.body.toString("utf8")).toBe(rowsOf(key, tenant)[0]?.body);
      };

      // 1. Both tenants race on the same keys with different bodies, RACERS requests each at once.
      const raced = Array.from({ length: RACED_KEYS }, (_, i) => `${prefix}-raced-${i}`);
      const races = await Promise.all(
        raced.map(async (key) => {
          const sent = [A, B].flatMap((tenant) =>
            Array.from({ length: RACERS }, () => ({ tenant, reply: post(key, tenant, { handlerMs: 150 }) })),
          );
          return { key, replies: await Promise.all(sent.map(async (s) => ({ ...s, reply: await s.reply }))) };
        }),
      );
      const raceShapes: string[] = [];
      for (const { key, replies } of races) {
        for (const tenant of [A, B]) {
          const own = replies.filter((r) => r.tenant === tenant).map((r) => r.reply);
          const rows = rowsOf(key, tenant);
          expect(rows, `${key} ${tenant}`).toHaveLength(1);
          // One original; the others a 409 or a replay of that same execution, never the other tenant's.
          expect(own.filter((reply) => shape(reply) === "201")).toHaveLength(1);
          for (const reply of own) {
            raceShapes.push(shape(reply));
            if (reply.status === 201) expect(reply.body.toString("utf8")).toBe(rows[0]?.body);
            else expect(shape(reply)).toBe(`409 ${IN_PROGRESS}`);
          }
        }
        expect(ledger.of(key)).toHaveLength(2);
        for (const tenant of [A, B]) expectOwnReplay(await post(key, tenant), key, tenant);
      }

      // 2. B probes A's completed keys and A's running keys, with A's exact body (first half) or another.
      const completed = Array.from({ length: PROBED_KEYS }, (_, i) => `${prefix}-done-${i}`);
      for (const key of completed) expectOwnExecution(await post(key, A), key, A);
      const running = Array.from({ length: PROBED_KEYS }, (_, i) => `${prefix}-running-${i}`);
      const timedRunning = Array.from({ length: TIMING_SAMPLES }, (_, i) => `${prefix}-timed-running-${i}`);
      // A's handlers on these keys start and wait, their claims held, until the probing is over.
      let heldSettled = false;
      const heldReplies = Promise.all(
        [...running, ...timedRunning].map((key) => post(key, A, { hold: true })),
      ).finally(() => {
        heldSettled = true;
      });
      await server.whenHeld([...running, ...timedRunning]);
      const unknown = Array.from({ length: PROBED_KEYS }, (_, i) => `${prefix}-unknown-${i}`);
      const probes: Array<{ key: string; of: string; body: string; reply: Reply }> = [];
      for (const [of, keys] of [
        ["completed", completed],
        ["running", running],
        ["unknown", unknown],
      ] as const) {
        for (const [i, key] of keys.entries()) {
          const body = i < PROBED_KEYS / 2 ? bodyOf(A, key) : bodyOf(B, key);
          probes.push({ key, of, body, reply: await post(key, B, { body }) });
        }
      }
      for (const { key, reply } of probes) {
        expectOwnExecution(reply, key, B);
        expect(reply.body.toString("utf8")).not.toContain(A);
      }
      // 3. Timing: B's latency on A's completed keys, on A's running keys and on unknown keys, interleaved in a
      // seeded order over one keep-alive connection. Each probe is a fresh execution of B's.
      const random = seeded(SEED);
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const timedDone = Array.from({ length: TIMING_SAMPLES }, (_, i) => `${prefix}-timed-done-${i}`);
      for (const key of timedDone) expect((await post(key, A, { agent })).status).toBe(201);
      const samples: Record<"completed" | "running" | "unknown", number[]> = {
        completed: [],
        running: [],
        unknown: [],
      };
      const timingShapes: Record<"completed" | "running" | "unknown", string[]> = {
        completed: [],
        running: [],
        unknown: [],
      };
      await post(`${prefix}-timed-warm-up`, B, { agent });
      for (let i = 0; i < TIMING_SAMPLES; i++) {
        const round = [
          ["completed", timedDone[i] as string],
          ["running", timedRunning[i] as string],
          ["unknown", `${prefix}-timed-unknown-${i}`],
        ] as const;
        for (const [of, key] of [...round].sort(() => random() - 0.5)) {
          const reply = await post(key, B, { agent, body: bodyOf(A, key) });
          samples[of].push(reply.ms);
          timingShapes[of].push(shape(reply));
          expect(reply.body.toString("utf8")).toBe(rowsOf(key, B)[0]?.body);
        }
      }
      // For contrast: what a replay (the leak this would be) costs, B's own retries of its unknown keys.
      const replayMs: number[] = [];
      for (let i = 0; i < TIMING_SAMPLES; i++) {
        const key = `${prefix}-timed-unknown-${i}`;
        const reply = await post(key, B, { agent, body: bodyOf(A, key) });
        expect(shape(reply)).toBe("201 replayed");
        replayMs.push(reply.ms);
      }
      agent.destroy();
      // Only now do A's held handlers finish: each answers its own execution, and B's probes changed nothing.
      const probedWhileHeld = !heldSettled;
      server.release([...running, ...timedRunning]);
      for (const [i, reply] of (await heldReplies).entries()) {
        expectOwnExecution(reply, [...running, ...timedRunning][i] as string, A);
      }
      expect(probedWhileHeld).toBe(true);
      // Each tenant's retry replays its own execution.
      for (const key of [...completed, ...running]) {
        expectOwnReplay(await post(key, A), key, A);
        const probe = probes.find((p) => p.key === key) as (typeof probes)[number];
        const retry = await post(key, B, { body: probe.body });
        expectOwnReplay(retry, key, B);
        expect(retry.body.equals(probe.reply.body)).toBe(true);
      }

      const medians = {
        completed: median(samples.completed),
        running: median(samples.running),
        unknown: median(samples.unknown),
      };

      // 4. Awkward tenant ids: each pair on one key, the second right after the first completed.
      const awkwardShapes: string[] = [];
      for (const [i, pair] of AWKWARD_PAIRS.entries()) {
        const key = `${prefix}-awkward-${i}`;
        for (const tenant of pair) {
          const reply = await post(key, tenant);
          awkwardShapes.push(shape(reply));
          expectOwnExecution(reply, key, tenant);
        }
        for (const tenant of pair) expectOwnReplay(await post(key, tenant), key, tenant);
        expect(ledger.of(key).map((row) => row.tenant)).toEqual(pair);
      }

      const executions = ledger.all().filter((row) => row.key.startsWith(prefix)).length;
      report(
        `tenants/${storeKind}/${binding}`,
        `seed ${SEED}; ${RACED_KEYS} keys raced by 2 tenants × ${RACERS} requests: ${tally(raceShapes)}, ` +
          `2 executions per key; tenant B probing A's ${PROBED_KEYS} completed and ${PROBED_KEYS} running keys ` +
          `(half with A's exact body) and ${PROBED_KEYS} unknown keys: ${tally(probes.map((p) => `${p.of}:${shape(p.reply)}`))}; ` +
          `timing, B's median latency over ${TIMING_SAMPLES} fresh executions each on one keep-alive connection, ` +
          `interleaved: A's completed keys ${medians.completed.toFixed(2)} ms, A's running keys ` +
          `${medians.running.toFixed(2)} ms, unknown keys ${medians.unknown.toFixed(2)} ms (bound ±` +
          `${timingBoundMs(medians.unknown).toFixed(2)} ms; statuses ${tally([...timingShapes.completed, ...timingShapes.running, ...timingShapes.unknown])}); ` +
          `B's own replays ${median(replayMs).toFixed(2)} ms; ${AWKWARD_PAIRS.length} awkward tenant pairs ` +
          `(prefixes, separators, 2,000 chars, Latin-1 vs UTF-8): ${tally(awkwardShapes)}; ${executions} executions`,
        { requests, executions, records: checked.size },
      );

      for (const of of ["completed", "running", "unknown"] as const) {
        expect(timingShapes[of]).toEqual(Array(TIMING_SAMPLES).fill("201"));
      }
      expect(Math.abs(medians.completed - medians.unknown)).toBeLessThanOrEqual(
        timingBoundMs(medians.unknown),
      );
      expect(Math.abs(medians.running - medians.unknown)).toBeLessThanOrEqual(timingBoundMs(medians.unknown));
      expect(server.stderr).toBe("");
    },
  );
});
