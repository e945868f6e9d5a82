import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import {
  type AppSetup,
  binaryBody,
  gatedParts,
  type RouteName,
  type RunningApp,
  signalReport,
  streamChunks,
  textChunks,
} from "@idempotency/binding-tests";
import type Fastify from "fastify";
import type { FastifyInstance } from "fastify";
import { idempotency, idempotencySignal, notStarted } from "../src/index.js";

/** `fastify` (5) or the `fastify4` alias, whose API as used here is the same. */
export type FastifyFactory = typeof Fastify;

/** Starts a Fastify app on 127.0.0.1:0. */
export async function listen(app: FastifyInstance): Promise<RunningApp> {
  await app.listen({ port: 0, host: "127.0.0.1" });
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server: app.server, close: () => app.close() };
}

/** A Fastify app that does not log and closes its connections on close. */
export function createApp(fastify: FastifyFactory): FastifyInstance {
  return fastify({ logger: false, forceCloseConnections: true }) as unknown as FastifyInstance;
}

/**
 * The shared route catalogue (see @idempotency/binding-tests) on Fastify: the plugin registered (and
 * awaited) before the routes, which opt in with `config: { idempotency: true }` (mount "route") or are all
 * protected with `allRoutes: true`, at the root ("global") or in a plugin registered with prefix `/api`.
 * Fastify's own JSON and text parsers parse the bodies.
 */
export async function startTableApp(fastify: FastifyFactory, setup: AppSetup): Promise<RunningApp> {
  const { options, mount, hooks } = setup;
  const app = createApp(fastify);
  app.setErrorHandler((error: Error, _request, reply) => {
    reply.code(500).type("text/plain").send(`handled: ${error.message}`);
  });
  const ran = (route: RouteName) => hooks.executed(route);
  const config = mount === "route" ? { config: { idempotency: true } } : {};

  const routes = (scope: FastifyInstance) => {
    scope.post("/orders", config, async (request, reply) => {
      const n = ran("orders");
      reply.header("set-cookie", `session=s${n}`).header("location", `/orders/${n}`).code(201);
      return { id: n, item: (request.body as { item: string }).item };
    });
    const text = async (_request: unknown, reply: { type(type: string): unknown }) => {
      reply.type("text/plain");
      return `hello ${ran("text")}`;
    };
    scope.get("/text", config, text);
    scope.post("/text", config, text);
    scope.post("/binary", config, async (_request, reply) => {
      reply.type("application/octet-stream");
      return Buffer.from(binaryBody(ran("binary")));
    });
    scope.post("/chunks", config, async (_request, reply) => {
      reply.type("text/plain");
      return Readable.from(textChunks(ran("chunks")));
    });
    scope.post("/stream", config, async (_request, reply) => {
      reply.type("application/octet-stream");
      return Readable.from(streamChunks(ran("stream")).map((chunk) => Buffer.from(chunk)));
    });
    scope.post("/stream-late", config, async (_request, reply) => {
      const n = ran("stream-late");
      await hooks.gate();
      reply.type("application/octet-stream");
      return Readable.from(streamChunks(n).map((chunk) => Buffer.from(chunk)));
    });
    scope.post("/signal", config, async (request) => {
      ran("signal");
      return signalReport(idempotencySignal(request), hooks.gate());
    });
    scope.post("/stream-gated", config, async (_request, reply) => {
      const [first, second] = gatedParts(ran("stream-gated"));
      reply.type("text/plain");
      return Readable.from(
        (async function* () {
          yield first;
          await hooks.gate();
          yield second;
        })(),
      );
    });
    scope.post("/empty", config, (_request, reply) => {
      ran("empty");
      reply.code(204).send();
    });
    scope.post("/redirect", config, (_request, reply) => {
      ran("redirect");
      reply.redirect("/orders/1", 303);
    });
    scope.post("/throw", config, async () => {
      ran("throw");
      throw new Error("boom");
    });
    scope.post("/fail", config, async (_request, reply) => {
      reply.code(500).type("text/plain");
      return `failed ${ran("fail")}`;
    });
    scope.post("/client-error", config, async (_request, reply) => {
      ran("client-error");
      reply.code(400);
      return { error: "invalid item" };
    });
    scope.post("/not-started", config, async (_request, reply) => {
      ran("not-started");
      notStarted(reply);
      reply.code(403);
      return { error: "forbidden" };
    });
    scope.post("/slow", config, async (_request, reply) => {
      const n = ran("slow");
      await hooks.gate();
      reply.code(201);
      return { slow: n };
    });
    scope.post("/headers-late", config, async (_request, reply) => {
      ran("headers-late");
      reply.code(200);
      reply.header("x-late", "yes");
      reply.type("text/plain");
      return "late";
    });
  };

  if (mount === "prefix") {
    await app.register(
      async (api) => {
        await api.register(idempotency, { ...options, allRoutes: true });
        routes(api);
      },
      { prefix: "/api" },
    );
  } else {
    await app.register(idempotency, mount === "global" ? { ...options, allRoutes: true } : options);
    routes(app);
  }
  return listen(app);
}
