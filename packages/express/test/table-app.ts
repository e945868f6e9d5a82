import { createServer } from "node:http";
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
import type express from "express";
import type { ErrorRequestHandler, RequestHandler } from "express";
import { idempotency, idempotencySignal, notStarted } from "../src/index.js";

export type ExpressModule = typeof express;

/** Starts an http.Server for an Express app on 127.0.0.1:0. */
export async function listen(app: (req: never, res: never) => void): Promise<RunningApp> {
  const server = createServer(app as Parameters<typeof createServer>[0]);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The shared route catalogue (see @idempotency/binding-tests) on Express `major`. */
export function startTableApp(express: ExpressModule, major: 4 | 5, setup: AppSetup): Promise<RunningApp> {
  const { options, mount, hooks } = setup;
  const app = express();
  const guard = idempotency(options);
  const router = express.Router();
  const target = mount === "prefix" ? router : app;
  if (mount === "global") app.use(guard);
  if (mount === "prefix") router.use(guard);
  const before: RequestHandler[] = mount === "route" ? [guard] : [];
  const ran = (route: RouteName) => hooks.executed(route);

  target.post("/orders", ...before, express.json(), (req, res) => {
    const n = ran("orders");
    res.setHeader("set-cookie", `session=s${n}`);
    res.location(`/orders/${n}`);
    res.status(201).json({ id: n, item: req.body.item });
  });
  const text: RequestHandler = (_req, res) => {
    res.type("text/plain").send(`hello ${ran("text")}`);
  };
  target.get("/text", ...before, text);
  target.post("/text", ...before, text);
  target.post("/binary", ...before, (_req, res) => {
    res.type("application/octet-stream").send(Buffer.from(binaryBody(ran("binary"))));
  });
  target.post("/chunks", ...before, (_req, res) => {
    const n = ran("chunks");
    res.type("text/plain");
    for (const chunk of textChunks(n)) res.write(chunk);
    res.end();
  });
  target.post("/stream", ...before, (_req, res) => {
    const n = ran("stream");
    res.type("application/octet-stream");
    Readable.from(streamChunks(n).map((chunk) => Buffer.from(chunk))).pipe(res);
  });
  target.post("/stream-late", ...before, async (_req, res) => {
    const n = ran("stream-late");
    await hooks.gate();
    res.type("application/octet-stream");
    Readable.from(streamChunks(n).map((chunk) => Buffer.from(chunk))).pipe(res);
  });
  target.post("/stream-gated", ...before, (_req, res) => {
    const [first, second] = gatedParts(ran("stream-gated"));
    res.type("text/plain");
    Readable.from(
      (async function* () {
        yield first;
        await hooks.gate();
        yield second;
      })(),
    ).pipe(res);
  });
  target.post("/empty", ...before, (_req, res) => {
    ran("empty");
    res.status(204).end();
  });
  target.post("/redirect", ...before, (_req, res) => {
    ran("redirect");
    res.redirect(303, "/orders/1");
  });
  if (major === 5) {
    target.post("/throw", ...before, async () => {
      ran("throw");
      throw new Error("boom");
    });
  } else {
    target.post("/throw", ...before, (_req, _res, next) => {
      ran("throw");
      next(new Error("boom"));
    });
  }
  target.post("/fail", ...before, (_req, res) => {
    res
      .status(500)
      .type("text/plain")
      .send(`failed ${ran("fail")}`);
  });
  target.post("/client-error", ...before, (_req, res) => {
    ran("client-error");
    res.status(400).json({ error: "invalid item" });
  });
  target.post("/not-started", ...before, (req, res) => {
    ran("not-started");
    notStarted(req);
    res.status(403).json({ error: "forbidden" });
  });
  target.post("/slow", ...before, async (_req, res) => {
    const n = ran("slow");
    await hooks.gate();
    res.status(201).json({ slow: n });
  });
  target.post("/signal", ...before, async (req, res) => {
    ran("signal");
    res.status(200).json(await signalReport(idempotencySignal(req), hooks.gate()));
  });
  target.post("/headers-late", ...before, (_req, res) => {
    ran("headers-late");
    res.status(200);
    res.setHeader("x-late", "yes");
    res.type("text/plain").send("late");
  });

  if (mount === "prefix") app.use("/api", router);
  const errorHandler: ErrorRequestHandler = (error: Error, _req, res, _next) => {
    res.status(500).type("text/plain").send(`handled: ${error.message}`);
  };
  app.use(errorHandler);
  return listen(app);
}
