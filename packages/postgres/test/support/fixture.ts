import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, inject } from "vitest";
import { PostgresStore } from "../../src/index.js";
import { DATABASE_URL } from "./database.js";

/** Whether PostgreSQL answered in the global setup; when false, test files declare skipped tests. */
export const postgresReachable = inject("postgresReachable");

/** A table name of its own for one test file of one run, so runs never share or leave behind records. */
export function uniqueTableName(prefix = "idempotency_test"): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

/**
 * Pools for one test file: `pool(i)` is the i-th of several independent pools (separate connections), made
 * on first use. Registers `afterAll` hooks that drop `tables` and end every pool, since a store never ends
 * a pool it was given.
 */
export function usePools(tables: string[]): { pool(index?: number): pg.Pool } {
  const pools: pg.Pool[] = [];
  afterAll(async () => {
    const admin = pools[0];
    if (admin !== undefined) {
      for (const table of tables) await admin.query(`DROP TABLE IF EXISTS ${table}`);
    }
    await Promise.all(pools.map((pool) => pool.end()));
  });
  return {
    pool(index = 0) {
      for (let i = pools.length; i <= index; i++) {
        const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 5 });
        // node-postgres asks every pool owner for this: an idle connection that fails would otherwise crash.
        pool.on("error", () => undefined);
        pools.push(pool);
      }
      return pools[index] as pg.Pool;
    },
  };
}

/** Creates `table` through a store on `pool` before the file's tests run. */
export function createTableBeforeAll(pool: () => pg.Pool, table: string): void {
  beforeAll(async () => {
    await new PostgresStore({ pool: pool(), table }).createTable();
  });
}
