import type { IdempotencyOptions } from "@idempotency/core";

/**
 * The routes every framework's test app serves (see the README for what each handler does). All are POST,
 * except `text`, which also answers GET.
 */
export type RouteName =
  | "orders"
  | "text"
  | "binary"
  | "chunks"
  | "stream"
  | "empty"
  | "redirect"
  | "throw"
  | "fail"
  | "client-error"
  | "not-started"
  | "slow"
  | "signal"
  | "stream-gated"
  | "stream-late"
  | "headers-late";

/**
 * How the idempotency middleware is mounted:
 * - `"route"`: per route (`app.post("/orders", idempotency(options), handler)`), routes at the root;
 * - `"global"`: app-level (`app.use(idempotency(options))`), routes at the root;
 * - `"prefix"`: on a sub-app or router mounted under `/api` (`app.use("/api", router)`, Hono `app.route`,
 *   a Koa router with a prefix), so every route lives under `/api` (`POST /api/orders`).
 */
export type MountMode = "route" | "global" | "prefix";

/** What the route handlers call, so the table can count executions and hold `/slow` open. */
export interface RouteHooks {
  /**
   * Every handler calls this once, first thing, each time it runs. Returns `n`: how many times this route has
   * run in this app, including this time (1 on the first run). Handlers put `n` in their responses.
   */
  executed(route: RouteName): number;
  /**
   * `/slow` awaits this after `executed("slow")`, `/stream-gated` between its two parts, and `/signal` until
   * its claim's signal aborts; it resolves when the test opens the gate.
   */
  gate(): Promise<void>;
}

/** What the table hands a binding's app factory for one case. */
export interface AppSetup {
  /** Pass these, unchanged, to the binding's `idempotency(options)`. */
  options: IdempotencyOptions;
  mount: MountMode;
  hooks: RouteHooks;
}

/** The part of a Node `net.Server` the table uses to see that the server noticed a client disconnect. */
export interface ConnectionCounter {
  getConnections(callback: (error: Error | null, count: number) => void): void;
}

/** A started app: a real HTTP server listening on 127.0.0.1. */
export interface RunningApp {
  /** The origin, e.g. `"http://127.0.0.1:41234"`, without a trailing slash. */
  url: string;
  /** The underlying Node server (`http.Server`, or what `@hono/node-server`'s `serve` returns). */
  server: ConnectionCounter;
  /** Stops the server, closing idle connections; resolves when it is closed. */
  close(): Promise<void>;
}

/** Starts a framework app for `setup` on `127.0.0.1:0` and resolves once it listens. */
export type AppFactory = (setup: AppSetup) => Promise<RunningApp>;
