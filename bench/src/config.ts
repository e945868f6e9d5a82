/** What one benchmark server runs: which library guards the route, over which store. */

export type Library =
  | "plain"
  | "ours"
  | "express-idempotency"
  | "node-idempotency"
  | "plain-fastify"
  | "ours-fastify"
  | "plain-hono"
  | "ours-hono"
  | "plain-koa"
  | "ours-koa";

export type Framework = "express" | "fastify" | "hono" | "koa";

/** The framework a library's server runs on: the rows of each framework are compared with each other only. */
export function frameworkOf(library: Library): Framework {
  if (library === "plain-fastify" || library === "ours-fastify") return "fastify";
  if (library === "plain-hono" || library === "ours-hono") return "hono";
  if (library === "plain-koa" || library === "ours-koa") return "koa";
  return "express";
}

/** A baseline: the framework with no idempotency at all. */
export function isBaseline(library: Library): boolean {
  return library === "plain" || library.startsWith("plain-");
}

/** Our library on that framework: the row every other row of the framework is divided by. */
export function oursOn(framework: Framework): Library {
  return framework === "express" ? "ours" : `ours-${framework}`;
}
export type StoreKind = "none" | "memory" | "redis" | "sqlite" | "postgres" | "mongodb";

export interface Target {
  library: Library;
  store: StoreKind;
}

/** Everything a server child needs, passed as JSON in the `BENCH_SERVER` environment variable. */
export interface ServerConfig extends Target {
  /** Redis URL, for `store: "redis"`. */
  redisUrl?: string;
  /** Database file, for `store: "sqlite"` (a fresh file each run). */
  sqlitePath?: string;
  /** PostgreSQL connection string, for `store: "postgres"`. */
  databaseUrl?: string;
  /** Records table, for `store: "postgres"` (a fresh table each run, dropped when the server stops). */
  postgresTable?: string;
  /** MongoDB URL (`MONGODB_URL`), for `store: "mongodb"`. */
  mongodbUrl?: string;
  /** The collection of one server, for `store: "mongodb"` (a fresh one each run, dropped when it stops). */
  mongodbCollection?: string;
}

/** Record-key prefixes in Redis, so a shared `REDIS_URL` server can be cleaned after a run. */
export const REDIS_PREFIX_OURS = "bench:ours:";
export const REDIS_PREFIX_NODE_IDEMPOTENCY = "bench:node-idempotency";
export const REDIS_CLEANUP_PATTERN = "bench:*";

export const LIBRARY_LABELS: Record<Library, string> = {
  plain: "plain Express (no idempotency)",
  ours: "@idempotency/express (ours)",
  "express-idempotency": "express-idempotency",
  "node-idempotency": "@node-idempotency/core + our Express wiring",
  "plain-fastify": "plain Fastify (no idempotency)",
  "ours-fastify": "@idempotency/fastify (ours)",
  "plain-hono": "plain Hono (no idempotency)",
  "ours-hono": "@idempotency/hono (ours)",
  "plain-koa": "plain Koa (no idempotency)",
  "ours-koa": "@idempotency/koa (ours)",
};

export const STORE_LABELS: Record<StoreKind, string> = {
  none: "none",
  memory: "memory",
  redis: "Redis",
  sqlite: "SQLite",
  postgres: "PostgreSQL",
  mongodb: "MongoDB",
};

/**
 * Every (library, store) pair the benchmark measures; each baseline is listed with the memory rows. The
 * Fastify rows (our plugin against plain Fastify, memory store) are there to show what the plugin costs on
 * Fastify; the peers have no Fastify binding.
 */
export const TARGETS: Target[] = [
  { library: "plain", store: "none" },
  { library: "ours", store: "memory" },
  { library: "express-idempotency", store: "memory" },
  { library: "node-idempotency", store: "memory" },
  { library: "ours", store: "redis" },
  { library: "node-idempotency", store: "redis" },
  { library: "ours", store: "sqlite" },
  { library: "ours", store: "postgres" },
  { library: "ours", store: "mongodb" },
  { library: "plain-fastify", store: "none" },
  { library: "ours-fastify", store: "memory" },
  { library: "plain-hono", store: "none" },
  { library: "ours-hono", store: "memory" },
  { library: "plain-koa", store: "none" },
  { library: "ours-koa", store: "memory" },
];

export function targetName(target: Target): string {
  return `${target.library}/${target.store}`;
}

/** The path every scenario posts to, and the one the server reports its handler executions on. */
export const ORDERS_PATH = "/orders";
export const EXECUTIONS_PATH = "/__bench/executions";
/** The server process's CPU time so far (`process.cpuUsage()`, user + system, in microseconds). */
export const CPU_PATH = "/__bench/cpu";

/**
 * A request header that makes the handler wait this many milliseconds before answering, so that concurrent
 * duplicates overlap with a running handler. Only the duplicates scenario sends it; no library fingerprints
 * or stores request headers by default, so it changes nothing else.
 */
export const HANDLER_DELAY_HEADER = "x-bench-handler-delay-ms";
