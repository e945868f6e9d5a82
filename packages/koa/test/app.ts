import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import type { AppSetup, RunningApp } from "@idempotency/binding-tests";
import { binaryBody, gatedParts, signalReport, streamChunks, textChunks } from "@idempotency/binding-tests";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import type Koa from "koa";
import type { Middleware } from "koa";
import { idempotency, idempotencySignal, notStarted } from "../src/index.js";

/** The Koa application class under test: koa@3 (`koa`) or koa@2 (`koa2`). */
export type KoaClass = typeof Koa;

/** Starts a Koa app (any context type, Koa 2 or 3) on 127.0.0.1:0. */
export async function listen(app: {
  callback(): (req: IncomingMessage, res: ServerResponse) => unknown;
}): Promise<RunningApp & { server: Server }> {
  const server = createServer(app.callback()).listen(0, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

/**
 * The shared route catalogue (see @idempotency/binding-tests' README) on Koa with @koa/router and
 * @koa/bodyparser, the body parser after the idempotency middleware.
 */
export async function startCatalogue(KoaApp: KoaClass, setup: AppSetup): Promise<RunningApp> {
  const { hooks, mount } = setup;
  const app = new KoaApp();
  app.silent = true;
  // The app's own error handler: the table expects a thrown error answered 500 "handled: <message>".
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      ctx.status = 500;
      ctx.type = "text/plain";
      ctx.body = `handled: ${(error as Error).message}`;
    }
  });

  const guard = idempotency(setup.options);
  const parse = bodyParser();
  const router = new Router(mount === "prefix" ? { prefix: "/api" } : {});
  const perRoute: Middleware[] = mount === "route" ? [guard, parse] : [];
  if (mount === "global") app.use(guard).use(parse);
  if (mount === "prefix") router.use(guard, parse);

  router.post("/orders", ...perRoute, async (ctx) => {
    const n = hooks.executed("orders");
    const body = ctx.request.body as { item?: unknown };
    ctx.status = 201;
    ctx.set("Location", `/orders/${n}`);
    ctx.set("Set-Cookie", `session=s${n}`);
    ctx.body = { id: n, item: body.item };
  });
  const text: Middleware = async (ctx) => {
    ctx.type = "text/plain";
    ctx.body = `hello ${hooks.executed("text")}`;
  };
  router.get("/text", ...perRoute, text);
  router.post("/text", ...perRoute, text);
  router.post("/binary", ...perRoute, async (ctx) => {
    const n = hooks.executed("binary");
    ctx.type = "application/octet-stream";
    ctx.body = Buffer.from(binaryBody(n));
  });
  router.post("/chunks", ...perRoute, async (ctx) => {
    const n = hooks.executed("chunks");
    ctx.type = "text/plain";
    ctx.body = Readable.from(textChunks(n));
  });
  router.post("/stream", ...perRoute, async (ctx) => {
    const n = hooks.executed("stream");
    const chunks = streamChunks(n);
    ctx.type = "application/octet-stream";
    ctx.body = new Readable({
      read() {
        // One chunk per tick, like a real producer.
        setImmediate(() => {
          const next = chunks.shift();
          this.push(next === undefined ? null : Buffer.from(next));
        });
      },
    });
  });
  router.post("/stream-late", ...perRoute, async (ctx) => {
    const chunks = streamChunks(hooks.executed("stream-late"));
    await hooks.gate();
    ctx.type = "application/octet-stream";
    ctx.body = Readable.from(chunks.map((chunk) => Buffer.from(chunk)));
  });
  router.post("/stream-gated", ...perRoute, async (ctx) => {
    const [first, second] = gatedParts(hooks.executed("stream-gated"));
    ctx.type = "text/plain";
    ctx.body = Readable.from(
      (async function* () {
        yield first;
        await hooks.gate();
        yield second;
      })(),
    );
  });
  router.post("/empty", ...perRoute, async (ctx) => {
    hooks.executed("empty");
    ctx.status = 204;
  });
  router.post("/redirect", ...perRoute, async (ctx) => {
    hooks.executed("redirect");
    ctx.status = 303;
    ctx.redirect("/orders/1");
  });
  router.post("/throw", ...perRoute, async () => {
    hooks.executed("throw");
    throw new Error("boom");
  });
  router.post("/fail", ...perRoute, async (ctx) => {
    const n = hooks.executed("fail");
    ctx.status = 500;
    ctx.type = "text/plain";
    ctx.body = `failed ${n}`;
  });
  router.post("/client-error", ...perRoute, async (ctx) => {
    hooks.executed("client-error");
    ctx.status = 400;
    ctx.body = { error: "invalid item" };
  });
  router.post("/not-started", ...perRoute, async (ctx) => {
    hooks.executed("not-started");
    notStarted(ctx);
    ctx.status = 403;
    ctx.body = { error: "forbidden" };
  });
  router.post("/slow", ...perRoute, async (ctx) => {
    const n = hooks.executed("slow");
    await hooks.gate();
    ctx.status = 201;
    ctx.body = { slow: n };
  });
  router.post("/signal", ...perRoute, async (ctx) => {
    hooks.executed("signal");
    ctx.status = 200;
    ctx.body = await signalReport(idempotencySignal(ctx), hooks.gate());
  });
  router.post("/headers-late", ...perRoute, async (ctx) => {
    hooks.executed("headers-late");
    ctx.status = 200;
    ctx.set("x-late", "yes");
    ctx.type = "text/plain";
    ctx.body = "late";
  });

  app.use(router.routes()).use(router.allowedMethods());
  return listen(app);
}
