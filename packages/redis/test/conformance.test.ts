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

// Every instance gets its own connection, so the race cases race over separate sockets. `stall` pauses the
// server's writes (scripts included) from another connection, as an overloaded or failing-over server does.
describeStore("RedisStore (single node)", () => new RedisStore({ client: redis.client() }), {
  stall: async (ms) => {
    await redis.client().call("CLIENT", "PAUSE", String(ms), "WRITE");
  },
});

// The same over RESP2 connections (ioredis speaks RESP3 by default): the scripts' replies must decode alike.
describeStore(
  "RedisStore (single node, RESP2)",
  () => new RedisStore({ client: redis.client({ protocol: 2 }) }),
);

// With auto-pipelining, which batches the commands of one tick: ioredis 6 drops the command name of
// `callBuffer` there, so the store must use the named `…Buffer` commands.
describeStore(
  "RedisStore (single node, enableAutoPipelining)",
  () => new RedisStore({ client: redis.client({ enableAutoPipelining: true }) }),
);
