import { type HttpRequestInit, httpRequest } from "@idempotency/binding-tests";
import type { IdempotencyEvent, IdempotencyOptions } from "@idempotency/core";
import { instrumentedStore } from "@idempotency/core/testing";
import type { FastifyInstance } from "fastify";
import fastify from "fastify";
import fastify4 from "fastify4";
import { afterEach } from "vitest";
import { createApp, type FastifyFactory, listen } from "./table-app.js";

/** Every supported Fastify major, for `describe.each`. */
export const FASTIFY_VERSIONS: Array<[string, FastifyFactory]> = [
  ["fastify 5", fastify],
  ["fastify 4", fastify4 as unknown as FastifyFactory],
];

const opened: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of opened.splice(0)) await close();
});

/** Options on a fresh instrumented store (call counts, a switchable outage) that record every event. */
export function recording(overrides: Partial<IdempotencyOptions> = {}) {
  const events: IdempotencyEvent[] = [];
  const store = instrumentedStore();
  const options: IdempotencyOptions = {
    store,
    scope: "global",
    onEvent: (event) => events.push(event),
    ...overrides,
  };
  return { store, events, options };
}

/** Builds an app with `setup`, listens on 127.0.0.1:0, and closes it after the test. */
export async function serve(lib: FastifyFactory, setup: (app: FastifyInstance) => Promise<void> | void) {
  const app = createApp(lib);
  await setup(app);
  const running = await listen(app);
  opened.push(running.close);
  return {
    app,
    url: running.url,
    server: running.server,
    send: (path: string, init?: HttpRequestInit) => httpRequest(`${running.url}${path}`, init),
  };
}

/** Polls until `condition` holds (for outcomes that settle after the response, such as a drained stream). */
export async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("the condition never held");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Resolves when the server holds no connection any more (it noticed every client disconnect). */
export async function untilNoConnections(server: {
  getConnections(cb: (error: Error | null, count: number) => void): void;
}): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const count = await new Promise<number>((resolve, reject) =>
      server.getConnections((error, n) => (error ? reject(error) : resolve(n))),
    );
    if (count === 0) return;
    if (Date.now() > deadline) throw new Error(`the server still holds ${count} connection(s)`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
