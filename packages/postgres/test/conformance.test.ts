import { describeStore } from "@idempotency/conformance";
import { describe } from "vitest";
import { PostgresStore } from "../src/index.js";
import { createTableBeforeAll, postgresReachable, uniqueTableName, usePools } from "./support/fixture.js";

/** As many pools as the suite's race cases open instances (its default `instances`). */
const POOLS = 5;

describe.skipIf(!postgresReachable)("on PostgreSQL", () => {
  const table = uniqueTableName();
  const { pool } = usePools([table]);
  createTableBeforeAll(pool, table);

  // Each instance gets the next pool in turn: the race cases open five instances, so their begins arrive
  // over five pools of separate connections and really race in the database. No advanceTime: the store
  // reads the database's clock, so the suite runs in real time (short leases, real waits).
  let next = 0;
  describeStore("PostgresStore", () => new PostgresStore({ pool: pool(next++ % POOLS), table }));
});
