import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { describeTransactionalBinding, type RunningApp } from "@idempotency/binding-tests";
import { Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { idempotency, idempotencyTransaction, notStarted } from "../src/index.js";

describeTransactionalBinding("hono 4", ({ options, route }) => {
  const app = new Hono();
  app.post("/orders", idempotency(options), async (c) => {
    const answer = await route(idempotencyTransaction(c), await c.req.json());
    if (answer.notStarted) notStarted(c);
    return c.json(answer.body as object, answer.status as ContentfulStatusCode);
  });
  return new Promise<RunningApp>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info: AddressInfo) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        server,
        close: () =>
          new Promise<void>((done) => {
            if ("closeAllConnections" in server) server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
});
