/**
 * One store of each kind for a scenario, with the ledger beside it: a temporary directory (the SQLite file
 * and the ledger), a private redis-server, or a fresh PostgreSQL table. A missing redis-server or PostgreSQL
 * fails the scenario; nothing is skipped.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostgresStore } from "@idempotency/postgres";
import pg from "pg";
import { Ledger } from "./ledger.js";
import { startSingle } from "./redis.js";
import type { ServerConfig } from "./servers.js";

/** The PostgreSQL the postgres rows use, as the @idempotency/postgres tests do; a missing one fails the run. */
export const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export type StoreKind = ServerConfig["store"];
export const STORES: StoreKind[] = ["sqlite", "redis", "postgres", "memory"];

export class StoreFixture {
  private constructor(
    readonly kind: StoreKind,
    readonly dir: string,
    readonly ledger: Ledger,
    readonly redis: Awaited<ReturnType<typeof startSingle>> | undefined,
    readonly postgres: pg.Pool | undefined,
    readonly postgresTable: string,
  ) {}

  static async open(kind: StoreKind, scenario: string): Promise<StoreFixture> {
    const dir = mkdtempSync(join(tmpdir(), `idempotency-${scenario}-${kind}-`));
    const ledger = new Ledger(join(dir, "ledger.db"));
    const table = `idempotency_${scenario}_${process.pid}_${Date.now().toString(36)}`;
    let postgres: pg.Pool | undefined;
    if (kind === "postgres") {
      postgres = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
      await new PostgresStore({ pool: postgres, table }).createTable();
    }
    const redis = kind === "redis" ? await startSingle({ honourRedisUrl: false }) : undefined;
    return new StoreFixture(kind, dir, ledger, redis, postgres, table);
  }

  get sqlitePath(): string {
    return join(this.dir, "store.db");
  }

  /** The store part of a server's configuration. */
  config(): Omit<ServerConfig, "binding"> {
    return {
      store: this.kind,
      sqlitePath: this.sqlitePath,
      redisUrl: this.redis?.url,
      databaseUrl: DATABASE_URL,
      postgresTable: this.postgresTable,
      ledgerPath: this.ledger.path,
    };
  }

  async close(): Promise<void> {
    await this.redis?.stop();
    await this.postgres?.query(`DROP TABLE IF EXISTS ${this.postgresTable}`);
    await this.postgres?.end();
    this.ledger.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
