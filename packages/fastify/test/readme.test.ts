import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { httpRequest } from "@idempotency/binding-tests";
import { afterAll, describe, expect, it } from "vitest";
import { app } from "./quickstart.js";

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const quickstart = readFileSync(new URL("./quickstart.ts", import.meta.url), "utf8");

describe("README quick start", () => {
  it("is the code of test/quickstart.ts", () => {
    const block = /## Quick start\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    const expected = quickstart
      .replace(/^(\/\/.*\n)+\n/, "")
      .replace('from "../src/index.js"', 'from "@idempotency/fastify"')
      .replace("export const app", "const app")
      .concat("await app.listen({ port: 3000 });\n");
    expect(block).toBe(expected);
  });

  const url = app.listen({ port: 0, host: "127.0.0.1" }).then(() => {
    const { port } = app.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  });
  afterAll(() => app.close());

  const acme = { authorization: "Bearer acme-token" };

  it("replays, answers 422 for another body, and lets a corrected retry run after notStarted", async () => {
    const base = await url;
    const first = await httpRequest(`${base}/orders`, {
      headers: acme,
      key: "7d0c",
      json: '{"item":"apple"}',
    });
    const again = await httpRequest(`${base}/orders`, {
      headers: acme,
      key: "7d0c",
      json: '{"item":"apple"}',
    });
    const other = await httpRequest(`${base}/orders`, {
      headers: acme,
      key: "7d0c",
      json: '{"item":"pear"}',
    });
    expect([first.status, first.text(), first.headers.location]).toEqual([
      201,
      '{"id":1,"item":"apple"}',
      "/orders/1",
    ]);
    expect([again.status, again.text(), again.headers["idempotent-replayed"]]).toEqual([
      201,
      '{"id":1,"item":"apple"}',
      "true",
    ]);
    expect(other.status).toBe(422);

    const empty = await httpRequest(`${base}/orders`, { headers: acme, key: "8e1d", json: "{}" });
    const corrected = await httpRequest(`${base}/orders`, {
      headers: acme,
      key: "8e1d",
      json: '{"item":"pear"}',
    });
    expect(empty.status).toBe(400);
    expect([corrected.status, corrected.headers["idempotent-replayed"]]).toEqual([201, undefined]);
  });

  it("scopes keys by the authenticated tenant, whatever tenant header the client sends, after a 401 without one", async () => {
    const base = await url;
    const order = { key: "7d0c", json: '{"item":"apple"}' };
    expect((await httpRequest(`${base}/orders`, order)).status).toBe(401);
    const globex = { authorization: "Bearer globex-token", "x-tenant-id": "acme" };
    const other = await httpRequest(`${base}/orders`, { ...order, headers: globex });
    expect([other.status, other.headers["idempotent-replayed"]]).toEqual([201, undefined]);
  });
});
