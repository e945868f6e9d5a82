import { createIdempotency, type Decision, type IdempotencyRequest } from "@idempotency/core";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/index.js";
import { tempDirectory } from "./support.js";

const file = `${tempDirectory()}/engine.db`;
// Two connections to one file, as two processes would have.
const first = new SqliteStore({ path: file });
const second = new SqliteStore({ path: file });
const inspector = new Database(file);
afterAll(async () => {
  await first.close();
  await second.close();
  inspector.close();
});

function request(key: string, body: string, tenant = "tenant-a"): IdempotencyRequest {
  const bytes = new TextEncoder().encode(body);
  const headers = new Headers({
    "idempotency-key": key,
    "content-type": "application/json",
    "x-tenant": tenant,
  });
  return { method: "POST", path: "/orders", query: "", headers, body: async () => bytes, native: null };
}

const scope = (r: IdempotencyRequest) => r.headers.get("x-tenant") ?? "anonymous";
const engineOne = createIdempotency({ store: first, scope });
const engineTwo = createIdempotency({ store: second, scope });

function asResponse(decision: Decision) {
  if (decision.action !== "respond") throw new Error(`expected respond, got ${decision.action}`);
  const { status, headers, body } = decision.response;
  return { status, headers: Object.fromEntries(headers), body: Buffer.from(body).toString("utf8") };
}

describe("SqliteStore under the core engine", () => {
  it("runs the first request once and replays it byte for byte through another connection", async () => {
    const body = JSON.stringify({ amount: 100 });
    const decision = await engineOne.handle(request("order-1", body));
    expect(decision.action).toBe("execute");
    if (decision.action !== "execute") return;

    // While the first runs: a duplicate gets 409, a different body under the same key 422.
    const duplicate = asResponse(await engineTwo.handle(request("order-1", body)));
    expect(duplicate.status).toBe(409);
    expect(duplicate.headers["retry-after"]).toBe("1");
    expect(asResponse(await engineTwo.handle(request("order-1", '{"amount":5}'))).status).toBe(422);

    const responseBody = new Uint8Array([0x7b, 0x7d, 0x00, 0xff, 0x0a]);
    decision.execution.start(201, { "content-type": "application/octet-stream", location: "/orders/1" });
    const sent = Buffer.concat([decision.execution.write(responseBody), await decision.execution.end()]);
    expect(Buffer.compare(sent, responseBody)).toBe(0);

    const replay = await engineTwo.handle(request("order-1", JSON.stringify({ amount: 100 })));
    expect(replay.action).toBe("respond");
    if (replay.action !== "respond") return;
    expect(replay.replayed).toBe(true);
    expect(replay.response.status).toBe(201);
    expect(replay.response.headers).toEqual([
      ["content-type", "application/octet-stream"],
      ["location", "/orders/1"],
      ["idempotent-replayed", "true"],
      ["content-length", "5"],
    ]);
    expect(Buffer.compare(Buffer.from(replay.response.body), responseBody)).toBe(0);
  });

  it("stores the hashed identity as the primary key, never the raw key or the tenant", async () => {
    const rawKey = "raw-client-key-4f1d2c";
    const decision = await engineOne.handle(request(rawKey, "{}", "tenant-secret-9"));
    expect(decision.action).toBe("execute");
    if (decision.action === "execute") await decision.execution.end(new TextEncoder().encode("ok"));

    const rows = inspector.prepare("SELECT * FROM idempotency_records").all() as Array<
      Record<string, unknown>
    >;
    for (const row of rows) {
      expect(row.key).toMatch(/^[0-9a-f]{64}$/);
      const text = JSON.stringify(row, (_, v) => (Buffer.isBuffer(v) ? v.toString("latin1") : v));
      expect(text).not.toContain(rawKey);
      expect(text).not.toContain("tenant-secret-9");
    }
    // The same key from another tenant is another record: it runs.
    expect((await engineTwo.handle(request(rawKey, "{}", "tenant-b"))).action).toBe("execute");
  });

  it("answers 503 and runs nothing while another connection holds the write lock past busyTimeoutMs", async () => {
    const impatient = new SqliteStore({ path: file, busyTimeoutMs: 20 });
    const events: string[] = [];
    const engine = createIdempotency({
      store: impatient,
      scope,
      onEvent: (event) => events.push(event.type),
    });
    inspector.exec("BEGIN IMMEDIATE");
    try {
      const response = asResponse(await engine.handle(request("order-503", "{}")));
      expect(response.status).toBe(503);
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(response.body).type).toBe("urn:idempotency:problem:store-unavailable");
      expect(events).toEqual(["store-error"]);
    } finally {
      inspector.exec("ROLLBACK");
      await impatient.close();
    }
    expect((await engineTwo.handle(request("order-503", "{}"))).action).toBe("execute");
  });

  it("releases the claim of a failed request, so a retry through the other connection runs", async () => {
    const decision = await engineOne.handle(request("order-500", "{}"));
    if (decision.action !== "execute") throw new Error("expected execute");
    decision.execution.start(500, {});
    await decision.execution.end(new TextEncoder().encode("boom"));
    expect((await engineTwo.handle(request("order-500", "{}"))).action).toBe("execute");
  });
});
