import type { Server } from "node:http";
import type { IdempotencyEvent, IdempotencyOptions } from "@idempotency/core";
import { instrumentedStore } from "@idempotency/core/testing";
import Koa3 from "koa";
import Koa2 from "koa2";
import { afterEach } from "vitest";
import { type KoaClass, listen } from "./app.js";

/** Per-test timeout: generous, the machine is small and shared; no test waits on purpose. */
export const TIMEOUT = 30_000;
export const ORDER = '{"item":"apple","qty":2}';

/** The supported Koa majors, each test file runs its cases on both. */
export const MAJORS: Array<[string, KoaClass]> = [
  ["koa 3", Koa3],
  ["koa 2", Koa2],
];

/** A new app of this major, quiet about errors it handles. */
export function newApp(KoaApp: KoaClass): Koa3 {
  const app = new KoaApp();
  app.silent = true;
  return app;
}

export interface Started {
  url: string;
  server: Server;
  close(): Promise<void>;
}

const running: Started[] = [];
afterEach(async () => {
  for (const app of running.splice(0)) {
    app.server.closeAllConnections();
    await app.close();
  }
});

/** Starts `app` on 127.0.0.1:0; it is closed after the test. */
export async function start(app: Parameters<typeof listen>[0]): Promise<Started> {
  const started = await listen(app);
  running.push(started);
  return started;
}

/** Options over a counting store, recording events; `scope: "global"`. */
export function setup(extra: Partial<IdempotencyOptions> = {}) {
  const store = instrumentedStore();
  const events: IdempotencyEvent[] = [];
  const options: IdempotencyOptions = {
    store,
    scope: "global",
    onEvent: (event) => events.push(event),
    ...extra,
  };
  return { store, events, options, types: () => events.map((event) => event.type) };
}

/** Polls until `predicate` holds (a condition reached through real I/O, not a timing assumption). */
export async function until(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error("condition not reached");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Whether the server has noticed every client disconnect. */
export function noConnections(server: {
  getConnections(cb: (error: Error | null, count: number) => void): void;
}): Promise<boolean> {
  return new Promise<boolean>((resolve) => server.getConnections((_, count) => resolve(count === 0)));
}
