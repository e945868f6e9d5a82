/**
 * What a request costs the store, beside its CPU: Redis commands per request (from `INFO commandstats`) and
 * bytes stored per record (Redis: growth of `used_memory`; SQLite: the bytes of the record rows). Measured
 * around the same load runs as the throughput, so the figures belong to the requests in the table.
 */
import Database from "better-sqlite3";
import type { Redis } from "ioredis";

export interface StoreCost {
  /** Redis commands run per request answered, those run inside scripts included; undefined for other stores. */
  commandsPerRequest: number | undefined;
  /** Of those, the script calls (EVAL, EVALSHA, FCALL): each is one command sent, whatever it runs. */
  scriptsPerRequest?: number | undefined;
  /** Bytes stored per new record (first executions only), or undefined where not measured. */
  bytesPerRecord: number | undefined;
}

/** The totals of `calls=` in `INFO commandstats`: every command, and the script calls among them. */
export async function redisCommandCalls(admin: Redis): Promise<{ all: number; scripts: number }> {
  const info = await admin.info("commandstats");
  let all = 0;
  let scripts = 0;
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const calls = Number(match[2]);
    all += calls;
    if (/^(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)$/.test(match[1] as string)) scripts += calls;
  }
  return { all, scripts };
}

export async function redisUsedMemory(admin: Redis): Promise<number> {
  const info = await admin.info("memory");
  return Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? Number.NaN);
}

/** The bytes of every record row in the SqliteStore file at `path` (default table), per row. */
export function sqliteBytesPerRecord(path: string): number | undefined {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const row = db
      .prepare(
        "SELECT COUNT(*) AS n, SUM(length(key) + length(fingerprint) + ifnull(length(token), 0) + " +
          "ifnull(length(response), 0) + 16) AS bytes FROM idempotency_records",
      )
      .get() as { n: number; bytes: number | null };
    return row.n > 0 && row.bytes !== null ? row.bytes / row.n : undefined;
  } finally {
    db.close();
  }
}
