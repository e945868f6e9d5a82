import { connect } from "node:net";
import { httpRequest } from "@idempotency/binding-tests";
import { bodyParser } from "@koa/bodyparser";
import { describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import { newApp as createApp, MAJORS, noConnections, setup, start, until } from "./support.js";

for (const [major, KoaApp] of MAJORS) {
  describe(major, () => {
    it("a request whose connection is gone before Koa's error handling answers it releases or completes its claim, never holds it", async () => {
      const { options, events } = setup();
      const app = createApp(KoaApp).use(idempotency(options)).use(bodyParser());
      let runs = 0;
      app.use((ctx) => {
        runs++;
        ctx.status = 201;
      });
      const { url, server } = await start(app);
      // A whole request (its body is not JSON), then bytes that are no request: Node's parser refuses them and
      // destroys the connection while the middleware still reads the body, before @koa/bodyparser throws 400.
      const { port } = new URL(url);
      const socket = connect(Number(port), "127.0.0.1");
      socket.on("error", () => undefined);
      socket.end(
        "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: gone-1\r\nContent-Type: application/json\r\n" +
          'Content-Length: 9\r\n\r\n{"item":1}garbage',
      );
      await until(() => noConnections(server));
      await until(() => events.some((event) => event.type === "released"));
      // The connection was gone before the chain could start: the claim was given back and nothing ran.
      expect(events.map((event) => event.type)).toEqual(["claimed", "released"]);

      const retry = await httpRequest(`${url}/orders`, { key: "gone-1", json: '{"item":1' });
      expect({ status: retry.status, replayed: retry.headers["idempotent-replayed"] }).toEqual({
        status: 400,
        replayed: undefined,
      });
      expect(runs).toBe(0);
    });
  });
}
