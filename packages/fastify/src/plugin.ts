import {
  booleanOption,
  createIdempotency,
  declareNotStarted,
  executionSignal,
  executionTransaction,
  type IdempotencyOptions,
  IdempotencyOptionsError,
} from "@idempotency/core";
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  RouteOptions,
} from "fastify";
import fp from "fastify-plugin";
import { RouteGuard } from "./guard.js";
import { STATE } from "./state.js";

/**
 * The plugin's options: the core's options (`store` and `scope` required), validated at registration, plus
 * `allRoutes`.
 *
 * @example
 * ```ts
 * const options: FastifyIdempotencyOptions = { store: new MemoryStore(), scope: "global", allRoutes: true };
 * await app.register(idempotency, options);
 * ```
 */
export interface FastifyIdempotencyOptions extends IdempotencyOptions {
  /**
   * `true`: protect every route of this encapsulation context (and its children) whose method is in
   * `methods`; a route opts out with `config: { idempotency: false }`. Default `false`: only routes with
   * `config: { idempotency: true }` (or an object of option overrides) are protected.
   */
  allRoutes?: boolean;
}

/**
 * A route's `config.idempotency`: `true` protects the route with the plugin's options, an object protects it
 * with those options overriding the plugin's (checked when the route is declared), `false` leaves it
 * unprotected even with `allRoutes`.
 *
 * @example
 * ```ts
 * const strict: IdempotencyRouteConfig = { required: true, ttlMs: 3_600_000 };
 * app.post("/payments", { config: { idempotency: strict } }, handler);
 * ```
 */
export type IdempotencyRouteConfig = boolean | Partial<IdempotencyOptions>;

/** Options of `register` itself, which Fastify also hands to the plugin. */
const REGISTER_OPTIONS = new Set(["prefix", "logLevel", "logSerializers"]);

const PACKAGE = "@idempotency/fastify";

const plugin: FastifyPluginAsync<FastifyIdempotencyOptions> = async (fastify, options) => {
  const { allRoutes: allRoutesOption, ...rest } = options;
  const allRoutes = booleanOption("allRoutes", allRoutesOption, false);
  const engineOptions = Object.fromEntries(
    Object.entries(rest).filter(([name]) => !REGISTER_OPTIONS.has(name)),
  ) as unknown as IdempotencyOptions;
  const shared = new RouteGuard(createIdempotency(engineOptions));
  const overrides = new WeakMap<object, RouteGuard>();
  declareDecorators(fastify);

  fastify.addHook("onRoute", (route) => {
    const guard = guardFor(route, allRoutes, shared, () => {
      const setting = route.config?.idempotency as Partial<IdempotencyOptions>;
      let own = overrides.get(setting);
      if (own === undefined) {
        own = new RouteGuard(createIdempotency({ ...engineOptions, ...setting }));
        overrides.set(setting, own);
      }
      return own;
    });
    if (guard === null || !guard.protects(route.method)) return;
    addRouteHook(route, "preParsing", guard.preParsing);
    addRouteHook(route, "preHandler", guard.preHandler);
    addRouteHook(route, "onSend", guard.onSend);
  });
};

/** The guard a route declares through `config.idempotency`, or null when it stays unprotected. */
function guardFor(
  route: RouteOptions,
  allRoutes: boolean,
  shared: RouteGuard,
  overridden: () => RouteGuard,
): RouteGuard | null {
  const setting: unknown = route.config?.idempotency;
  if (setting === undefined) return allRoutes ? shared : null;
  if (setting === false) return null;
  if (setting === true) return shared;
  if (typeof setting === "object" && setting !== null && !Array.isArray(setting)) return overridden();
  throw new IdempotencyOptionsError(
    "config.idempotency",
    `expected true, false or an object of options on route ${String(route.method)} ${route.url}, got ${
      setting === null ? "null" : typeof setting
    }.`,
  );
}

/** Appends a hook to the route's own hooks of that kind, which run after the application's. */
function addRouteHook(
  route: RouteOptions,
  name: "preParsing" | "preHandler" | "onSend",
  hook: unknown,
): void {
  const hooks = route as unknown as Record<string, unknown>;
  const existing = hooks[name];
  hooks[name] =
    existing === undefined ? [hook] : [...(Array.isArray(existing) ? existing : [existing]), hook];
}

/** Once per encapsulation context: a context inside one where the plugin is registered shares them. */
function declareDecorators(fastify: FastifyInstance): void {
  if (fastify.hasRequestDecorator(STATE)) return;
  fastify.decorateRequest(STATE, null);
  fastify.decorateReply("notStarted", function notStartedDecorator(this: FastifyReply) {
    declareNotStarted(this.request);
    return this;
  });
}

/**
 * The Fastify plugin (also the package's default export): makes unsafe requests (`POST` and `PATCH` by
 * default) safe to retry with an `Idempotency-Key` header. The first request runs and its response is
 * stored; a retry gets the stored response byte for byte with `Idempotent-Replayed: true`; the same key with
 * another request gets 422, a duplicate while the first runs 409 with `Retry-After`, a store outage 503.
 *
 * Routes opt in with `config: { idempotency: true }` (or an object of option overrides), or all at once
 * with `allRoutes: true`. Register it (awaited, or in an enclosing plugin) before the routes it protects: it
 * adds its hooks to each route as the route is declared. Options are the core's plus `allRoutes`; an invalid
 * one rejects the registration with `IdempotencyOptionsError`. Fastify's own body parsers still parse the
 * body; the outcome stored is the final response, whoever produced it (the handler, the error handler, a
 * not-found handler).
 *
 * @example
 * ```ts
 * import Fastify, { type FastifyRequest } from "fastify";
 * import { MemoryStore } from "@idempotency/core";
 * import { idempotency } from "@idempotency/fastify";
 *
 * type AuthenticatedRequest = FastifyRequest & { user: { id: string; tenantId: string } };
 *
 * const app = Fastify();
 * app.addHook("onRequest", authenticate); // sets request.user first; never scope by a client-chosen header
 * await app.register(idempotency, {
 *   store: new MemoryStore(),
 *   scope: (request) => (request.native as AuthenticatedRequest).user.tenantId,
 * });
 * app.post("/orders", { config: { idempotency: true } }, async (request, reply) => {
 *   reply.code(201);
 *   return createOrder(request.body);
 * });
 * ```
 */
export const idempotency = fp(plugin, { name: PACKAGE, fastify: "^4.29.0 || ^5.0.0" });

/**
 * Declares that this request did nothing yet (validation or authorisation failed before any side effect):
 * its claim is released and its response is not stored, whatever the status, so a retry with the same key
 * runs again. The same as `reply.notStarted()`. A no-op on requests the plugin did not claim.
 *
 * @example
 * ```ts
 * import { notStarted } from "@idempotency/fastify";
 *
 * app.post("/orders", { config: { idempotency: true } }, async (request, reply) => {
 *   if (!request.user.canOrder) {
 *     notStarted(reply);
 *     return reply.code(403).send({ error: "forbidden" });
 *   }
 *   reply.code(201);
 *   return createOrder(request.body);
 * });
 * ```
 */
export function notStarted(reply: FastifyReply): void {
  declareNotStarted(reply.request);
}

/**
 * The signal of this request's idempotency claim, or `undefined` when the plugin did not claim it. It aborts
 * when the handler should stop early: another request took the key over (this result will not be stored), or
 * the handler ran past `maxExecutionMs` (its lease is no longer renewed). `reason` is an
 * `IdempotencyAbortError` whose `code` says which. It does not abort when the client disconnects: the
 * handler's result is still stored for the client's retry. Takes the request or the reply.
 *
 * @example
 * ```ts
 * import { idempotencySignal } from "@idempotency/fastify";
 *
 * app.post("/payments", { config: { idempotency: true } }, async (request, reply) => {
 *   reply.code(201);
 *   return provider.charge(request.body, { signal: idempotencySignal(request) });
 * });
 * ```
 */
export function idempotencySignal(target: FastifyRequest | FastifyReply): AbortSignal | undefined {
  return executionSignal("request" in target ? target.request : target);
}

/**
 * The database transaction of this request's claim, when the middleware was created with
 * `transactional: true` (on `PostgresStore`: a node-postgres `PoolClient` between `BEGIN` and `COMMIT`), or
 * `undefined` when it did not claim the request. Write the request's effects through it: they commit
 * together with the stored response, or not at all (a 5xx, `notStarted`, a crash, a failed commit).
 *
 * @example
 * ```ts
 * import type { PoolClient } from "pg";
 * import { idempotencyTransaction } from "@idempotency/fastify";
 *
 * app.post("/orders", { config: { idempotency: true } }, async (request, reply) => {
 *   const tx = idempotencyTransaction<PoolClient>(request) as PoolClient;
 *   const { rows } = await tx.query("INSERT INTO orders (total) VALUES ($1) RETURNING id", [request.body.total]);
 *   reply.code(201);
 *   return { id: rows[0].id };
 * });
 * ```
 */
export function idempotencyTransaction<Tx = unknown>(target: FastifyRequest | FastifyReply): Tx | undefined {
  return executionTransaction<Tx>("request" in target ? target.request : target);
}
