import { describeStore } from "@idempotency/conformance";
import { afterAll, beforeAll } from "vitest";
import { RedisStore } from "../src/index.js";
import { startSingle } from "./support/redis-server.js";

// REDIS_URL when set, otherwise a private redis-server on a free loopback port.
let redis: Awaited<ReturnType<typeof startSingle>>;

beforeAll(async () => {
  redis = await startSingle({ honourRedisUrl: true });
});
afterAll(() => redis?.stop());

// The store's own deadline (the conformance calls pass none, except the stall case, which passes its own):
// 10 s, since 50 concurrent begins took over the 2 s default on a loaded 2-core CI machine.
const LOADED_MACHINE_TIMEOUT_MS = 10_000;

// Every instance gets its own connection, so the race cases race over separate sockets. `stall` pauses the
// server's writes (scripts included) from another connection, as an overloaded or failing-over server does.
describeStore(
  "RedisStore (single node)",
  () => new RedisStore({ client: redis.client(), timeoutMs: LOADED_MACHINE_TIMEOUT_MS }),
  {
    stall: async (ms) => {
      await redis.client().call("CLIENT", "PAUSE", String(ms), "WRITE");
    },
  },
);

// The same over RESP2 connections (ioredis speaks RESP3 by default): the scripts' replies must decode alike.
describeStore(
  "RedisStore (single node, RESP2)",
  () => new RedisStore({ client: redis.client({ protocol: 2 }), timeoutMs: LOADED_MACHINE_TIMEOUT_MS }),
);

// With auto-pipelining, which batches the commands of one tick: ioredis 6 drops the command name of
// `callBuffer` there, so the store must use the named `…Buffer` commands.
describeStore(
  "RedisStore (single node, enableAutoPipelining)",
  () =>
    new RedisStore({
      client: redis.client({ enableAutoPipelining: true }),
      timeoutMs: LOADED_MACHINE_TIMEOUT_MS,
    }),
);
