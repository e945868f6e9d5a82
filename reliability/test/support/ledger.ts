/**
 * The ledger: a SQLite file outside every idempotency store, where each execution of a handler leaves one
 * row. It is the ground truth for "the side effect happened exactly once".
 */
import Database from "better-sqlite3";

export interface Execution {
  key: string;
  tenant: string;
  pid: number;
  execution: string;
  body: string;
  at: number;
}

export class Ledger {
  readonly #db: Database.Database;

  constructor(readonly path: string) {
    this.#db = new Database(path);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("busy_timeout = 10000");
    this.#db.exec(
      "CREATE TABLE IF NOT EXISTS executions (key TEXT NOT NULL, tenant TEXT NOT NULL, pid INTEGER NOT NULL, " +
        "execution TEXT NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL)",
    );
    this.#db.exec("CREATE INDEX IF NOT EXISTS executions_tenant ON executions (tenant)");
  }

  all(): Execution[] {
    return this.#db.prepare("SELECT * FROM executions ORDER BY rowid").all() as Execution[];
  }

  of(key: string): Execution[] {
    return this.#db.prepare("SELECT * FROM executions WHERE key = ? ORDER BY rowid").all(key) as Execution[];
  }

  /** The executions of one principal (`x-tenant`), in order. */
  ofTenant(tenant: string): Execution[] {
    return this.#db
      .prepare("SELECT * FROM executions WHERE tenant = ? ORDER BY rowid")
      .all(tenant) as Execution[];
  }

  /** Executions per key. */
  counts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const row of this.#db
      .prepare("SELECT key, COUNT(*) AS n FROM executions GROUP BY key")
      .all() as Array<{
      key: string;
      n: number;
    }>)
      counts.set(row.key, row.n);
    return counts;
  }

  get size(): number {
    return (this.#db.prepare("SELECT COUNT(*) AS n FROM executions").get() as { n: number }).n;
  }

  close(): void {
    this.#db.close();
  }
}
