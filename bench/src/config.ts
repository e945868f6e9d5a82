/** What one benchmark server runs: which library guards the route, over which store. */

export type Library = "plain" | "ours" | "express-idempotency" | "node-idempotency";
export type StoreKind = "none" | "memory" | "redis" | "sqlite";

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
  /** How long the handler waits before answering, to make concurrent duplicates overlap. 0 in load runs. */
  handlerDelayMs: number;
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
};

export const STORE_LABELS: Record<StoreKind, string> = {
  none: "none",
  memory: "memory",
  redis: "Redis",
  sqlite: "SQLite",
};

/** Every (library, store) pair the benchmark measures; the baseline is listed with the memory rows. */
export const TARGETS: Target[] = [
  { library: "plain", store: "none" },
  { library: "ours", store: "memory" },
  { library: "express-idempotency", store: "memory" },
  { library: "node-idempotency", store: "memory" },
  { library: "ours", store: "redis" },
  { library: "node-idempotency", store: "redis" },
  { library: "ours", store: "sqlite" },
];

export function targetName(target: Target): string {
  return `${target.library}/${target.store}`;
}

/** The path every scenario posts to, and the one the server reports its handler executions on. */
export const ORDERS_PATH = "/orders";
export const EXECUTIONS_PATH = "/__bench/executions";
