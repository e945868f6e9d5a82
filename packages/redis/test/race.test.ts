import { randomUUID } from "node:crypto";
import { createIdempotency } from "@idempotency/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore } from "../src/index.js";
import { type ClientResponse, send } from "./support/engine.js";
import { startSingle } from "./support/redis-server.js";

let redis: Awaited<ReturnType<typeof startSingle>>;

beforeAll(async () => {
  redis = await startSingle({ honourRedisUrl: true });
});
afterAll(() => redis?.stop());

describe("concurrency across clients", () => {
  it("4 engines on 4 separate connections racing on the same 100 keys execute each key exactly once", async () => {
    const engines = Array.from({ length: 4 }, () =>
      createIdempotency({
        store: new RedisStore({ client: redis.client() }),
        scope: "global",
        leaseMs: 60_000,
        // 400 concurrent requests on a loaded 2-core CI machine took over the 2 s default (a 503 is not a race).
        storeTimeoutMs: 10_000,
      }),
    );
    const keys = Array.from({ length: 100 }, () => randomUUID());
    const executions = new Map<string, number>();

    const outcomes = await Promise.all(
      keys.flatMap((key) =>
        engines.map((engine, i) =>
          send(engine, { key, body: `{"key":"${key}"}` }, async () => {
            executions.set(key, (executions.get(key) ?? 0) + 1);
            // Stay in flight across a few event-loop turns, so duplicates overlap with the first.
            await new Promise((resolve) => setTimeout(resolve, 5));
            return { status: 201, headers: { "content-type": "application/json" }, body: `{"by":${i}}` };
          }).then((response) => ({ key, response })),
        ),
      ),
    );

    for (const key of keys) expect(executions.get(key), `executions of ${key}`).toBe(1);
    // The duplicates really overlapped with running first requests, rather than all arriving after them.
    expect(outcomes.filter(({ response }) => response.status === 409).length).toBeGreaterThan(0);
    const byKey = new Map<string, ClientResponse[]>();
    for (const { key, response } of outcomes) byKey.set(key, [...(byKey.get(key) ?? []), response]);
    for (const [key, responses] of byKey) {
      expect(responses).toHaveLength(4);
      const executed = responses.filter((response) => response.executed);
      expect(executed, `responses that ran for ${key}`).toHaveLength(1);
      const winner = executed[0] as ClientResponse;
      expect(winner.status).toBe(201);
      for (const other of responses.filter((response) => !response.executed)) {
        if (other.status === 409) {
          expect(other.headers["content-type"]).toBe("application/problem+json");
        } else {
          // The winner finished before this duplicate arrived: it gets the winner's response replayed.
          expect(other.status).toBe(201);
          expect(other.headers["idempotent-replayed"]).toBe("true");
          expect(other.body).toBe(winner.body);
        }
      }
    }
  });
});
