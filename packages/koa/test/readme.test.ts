import { readFileSync } from "node:fs";
import { httpRequest } from "@idempotency/binding-tests";
import { afterAll, describe, expect, it } from "vitest";
import { listen } from "./app.js";
import { app } from "./quickstart.js";

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
const quickstart = readFileSync(new URL("./quickstart.ts", import.meta.url), "utf8");

describe("README quick start", () => {
  it("is the code of test/quickstart.ts", () => {
    const block = /## Quick start\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    const expected = quickstart
      .replace(/^(\/\/.*\n)+\n/, "")
      .replace('from "../src/index.js"', 'from "@idempotency/koa"')
      .replace("export const app", "const app")
      .replace("app.use(router.routes());", "app.use(router.routes()).listen(3000);");
    expect(block).toBe(expected);
  });

  const running = listen(app);
  afterAll(async () => (await running).close());

  const acme = { authorization: "Bearer acme-token" };

  it("replays, answers 422 for another body, and lets a corrected retry run after notStarted", async () => {
    const { url } = await running;
    const first = await httpRequest(`${url}/orders`, {
      headers: acme,
      key: "7d0c",
      json: '{"item":"apple"}',
    });
    const again = await httpRequest(`${url}/orders`, {
      headers: acme,
      key: "7d0c",
      json: '{"item":"apple"}',
    });
    const other = await httpRequest(`${url}/orders`, { headers: acme, key: "7d0c", json: '{"item":"pear"}' });
    expect(first.status).toBe(201);
    expect(first.text()).toBe('{"id":1,"item":"apple"}');
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.text()).toBe(first.text());
    expect(other.status).toBe(422);

    const invalid = await httpRequest(`${url}/orders`, { headers: acme, key: "k2", json: "{}" });
    const corrected = await httpRequest(`${url}/orders`, { headers: acme, key: "k2", json: "{}" });
    expect(invalid.status).toBe(422);
    expect(invalid.text()).toBe('{"error":"item is required"}');
    expect(corrected.headers["idempotent-replayed"]).toBeUndefined();
  });

  it("scopes keys by the authenticated tenant, whatever tenant header the client sends, after a 401 without one", async () => {
    const { url } = await running;
    const order = { key: "7d0c", json: '{"item":"apple"}' };
    expect((await httpRequest(`${url}/orders`, order)).status).toBe(401);
    const globex = { authorization: "Bearer globex-token", "x-tenant-id": "acme" };
    const other = await httpRequest(`${url}/orders`, { ...order, headers: globex });
    expect([other.status, other.headers["idempotent-replayed"]]).toEqual([201, undefined]);
  });
});
