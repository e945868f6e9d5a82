import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import {
  type AppSetup,
  binaryBody,
  describeBindingBehaviour,
  gatedParts,
  type RunningApp,
  signalReport,
  streamChunks,
  textChunks,
} from "@idempotency/binding-tests";
import { type Handler, Hono, type MiddlewareHandler } from "hono";
import { stream } from "hono/streaming";
import { idempotency, idempotencySignal, notStarted } from "../src/index.js";

/** The shared route catalogue, written the way a Hono app would write it. */
function routes(app: Hono, setup: AppSetup, guard: MiddlewareHandler | undefined): void {
  const { hooks } = setup;
  const post = (path: string, handler: Handler) =>
    guard ? app.post(path, guard, handler) : app.post(path, handler);

  post("/orders", async (c) => {
    const n = hooks.executed("orders");
    const body = await c.req.json<{ item: string }>();
    c.header("Location", `/orders/${n}`);
    c.header("Set-Cookie", `session=s${n}`);
    return c.json({ id: n, item: body.item }, 201);
  });
  const text: Handler = (c) => c.text(`hello ${hooks.executed("text")}`);
  if (guard) app.on(["GET", "POST"], "/text", guard, text);
  else app.on(["GET", "POST"], "/text", text);
  post("/binary", (c) => {
    const bytes = binaryBody(hooks.executed("binary")) as Uint8Array<ArrayBuffer>;
    return c.body(bytes, 200, { "Content-Type": "application/octet-stream" });
  });
  post("/chunks", (c) => {
    const n = hooks.executed("chunks");
    c.header("Content-Type", "text/plain; charset=utf-8");
    return stream(c, async (s) => {
      for (const chunk of textChunks(n)) await s.write(chunk);
    });
  });
  post("/stream", (c) => {
    const chunks = streamChunks(hooks.executed("stream"));
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const chunk = chunks.shift();
        if (chunk) controller.enqueue(chunk);
        else controller.close();
      },
    });
    return c.body(body, 200, { "Content-Type": "application/octet-stream" });
  });
  post("/stream-late", async (c) => {
    const chunks = streamChunks(hooks.executed("stream-late"));
    await hooks.gate();
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const chunk = chunks.shift();
        if (chunk) controller.enqueue(chunk);
        else controller.close();
      },
    });
    return c.body(body, 200, { "Content-Type": "application/octet-stream" });
  });
  post("/stream-gated", (c) => {
    const [first, second] = gatedParts(hooks.executed("stream-gated"));
    const encoder = new TextEncoder();
    let step = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        step++;
        if (step === 1) controller.enqueue(encoder.encode(first));
        else if (step === 2) {
          await hooks.gate();
          controller.enqueue(encoder.encode(second));
        } else controller.close();
      },
    });
    return c.body(body, 200, { "Content-Type": "text/plain; charset=utf-8" });
  });
  post("/empty", (c) => {
    hooks.executed("empty");
    return c.body(null, 204);
  });
  post("/redirect", (c) => {
    hooks.executed("redirect");
    return c.redirect("/orders/1", 303);
  });
  post("/throw", () => {
    hooks.executed("throw");
    throw new Error("boom");
  });
  post("/fail", (c) => c.text(`failed ${hooks.executed("fail")}`, 500));
  post("/client-error", (c) => {
    hooks.executed("client-error");
    return c.json({ error: "invalid item" }, 400);
  });
  post("/not-started", (c) => {
    hooks.executed("not-started");
    notStarted(c);
    return c.json({ error: "forbidden" }, 403);
  });
  post("/slow", async (c) => {
    const n = hooks.executed("slow");
    await hooks.gate();
    return c.json({ slow: n }, 201);
  });
  post("/signal", async (c) => {
    hooks.executed("signal");
    return c.json(await signalReport(idempotencySignal(c), hooks.gate()), 200);
  });
  post("/headers-late", (c) => {
    hooks.executed("headers-late");
    c.status(200);
    c.header("x-late", "yes");
    return c.text("late");
  });
}

function startHonoApp(setup: AppSetup): Promise<RunningApp> {
  const app = new Hono();
  app.onError((error, c) => c.text(`handled: ${error.message}`, 500));
  const middleware = idempotency(setup.options);

  if (setup.mount === "route") routes(app, setup, middleware);
  else if (setup.mount === "global") {
    app.use(middleware);
    routes(app, setup, undefined);
  } else {
    const api = new Hono();
    api.use(middleware);
    routes(api, setup, undefined);
    app.route("/api", api);
  }

  return new Promise((resolve) => {
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
}

describeBindingBehaviour("hono 4", startHonoApp);
