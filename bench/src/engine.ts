/**
 * The engine alone: `createIdempotency` over a `MemoryStore`, no HTTP, no framework. Measures the CPU time of
 * one first execution (`handle` → claim, `start`, `end` → complete) and of one replay (`handle` → the stored
 * response), with 10³ and 10⁶ records already in the store, so that a cost that grows with the store shows.
 * Each figure is the best of several rounds of sequential operations (CPU time of this process, from
 * `process.cpuUsage()`), the steadiest figure on shared cores.
 *
 *   pnpm --filter @idempotency/bench bench:engine
 *   pnpm --filter @idempotency/bench bench:engine --sizes 1000 --rounds 3 --ops 20000
 *   pnpm --filter @idempotency/bench bench:engine --fingerprint false   # without the body fingerprint
 */
import { parseArgs } from "node:util";
import { createIdempotency, type IdempotencyRequest, MemoryStore } from "@idempotency/core";
import { ORDER_BODY } from "./order.js";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,1000000" },
    rounds: { type: "string", default: "5" },
    ops: { type: "string", default: "20000" },
    fingerprint: { type: "string", default: "true" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const rounds = Number(values.rounds);
const ops = Number(values.ops);
const fingerprint = values.fingerprint !== "false";
for (const n of [...sizes, rounds, ops]) {
  if (!Number.isSafeInteger(n) || n < 1)
    throw new Error("--sizes, --rounds and --ops take whole numbers ≥ 1");
}

const REQUEST_BODY = Buffer.from(ORDER_BODY);
const RESPONSE_BODY = Buffer.from(
  JSON.stringify({ id: "ord_1", status: "created", order: JSON.parse(ORDER_BODY) }),
);
const RESPONSE_HEADERS = {
  "content-type": "application/json; charset=utf-8",
  "content-length": String(RESPONSE_BODY.length),
  location: "/orders/ord_1",
};

function request(key: string): IdempotencyRequest {
  return {
    method: "POST",
    path: "/orders",
    query: "",
    headers: {
      get: (name) => {
        const lower = name.toLowerCase();
        return lower === "idempotency-key"
          ? `"${key}"`
          : lower === "content-type"
            ? "application/json"
            : null;
      },
    },
    body: () => Promise.resolve(REQUEST_BODY),
    native: undefined,
  };
}

type Engine = ReturnType<typeof createIdempotency>;

async function first(engine: Engine, key: string): Promise<void> {
  const decision = await engine.handle(request(key));
  if (decision.action !== "execute") throw new Error(`expected execute for ${key}, got ${decision.action}`);
  const execution = decision.execution;
  execution.start(201, RESPONSE_HEADERS);
  execution.write(RESPONSE_BODY);
  await execution.end();
}

async function replay(engine: Engine, key: string): Promise<void> {
  const decision = await engine.handle(request(key));
  if (decision.action !== "respond" || !decision.replayed) throw new Error(`expected a replay of ${key}`);
}

function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** The best per-operation CPU time over the rounds, in µs. */
async function measure(run: (i: number) => Promise<void>): Promise<number> {
  let best = Number.POSITIVE_INFINITY;
  let offset = 0;
  for (let round = 0; round < rounds; round++) {
    const start = cpuMicros();
    for (let i = 0; i < ops; i++) await run(offset + i);
    best = Math.min(best, (cpuMicros() - start) / ops);
    offset += ops;
  }
  return best;
}

console.log(
  `engine alone, MemoryStore, fingerprint ${fingerprint ? "on" : "off"}, ${rounds} rounds of ${ops} ops`,
);
console.log("| stored records | claim + complete µs | replay µs |");
console.log("| -------------: | ------------------: | --------: |");
for (const size of sizes) {
  const engine = createIdempotency({
    store: new MemoryStore(),
    scope: "global",
    ...(fingerprint ? {} : { fingerprint: false }),
  });
  for (let i = 0; i < size; i++) await first(engine, `fill-${i}`);
  // Warm-up: the JIT settles before anything is measured.
  for (let i = 0; i < 5_000; i++) await first(engine, `warm-${i}`);
  const claim = await measure((i) => first(engine, `first-${i}`));
  const replayed = await measure((i) => replay(engine, `fill-${i % size}`));
  console.log(`| ${size.toLocaleString("en-US")} | ${claim.toFixed(2)} | ${replayed.toFixed(2)} |`);
}
