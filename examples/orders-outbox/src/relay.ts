import type { Redis } from "ioredis";
import type pg from "pg";
import type { Tables } from "./schema.js";

export interface RelayOptions {
  pool: pg.Pool;
  redis: Redis;
  tables: Tables;
  stream: string;
  /** Rows moved per round. Default 100. */
  batch?: number;
  /** Called after the rows were published and before they are marked sent (the tests crash here). */
  afterPublish?: (ids: string[]) => void | Promise<void>;
}

/**
 * One round of the outbox relay: in one transaction, lock the oldest unsent rows (`FOR UPDATE SKIP LOCKED`,
 * so several relays never publish the same row at the same time), `XADD` each to the stream, mark them sent,
 * `COMMIT`. A relay that dies after publishing and before the commit leaves the rows unsent: the next round
 * publishes them again, and the consumers absorb the duplicates (they key their work on the outbox id).
 * Returns how many rows it published.
 */
export async function relayOnce({
  pool,
  redis,
  tables,
  stream,
  batch = 100,
  afterPublish,
}: RelayOptions): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const { rows } = await client.query<{ id: string; topic: string; payload: unknown }>(
      `SELECT id, topic, payload FROM ${tables.outbox} WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
      [batch],
    );
    if (rows.length === 0) {
      await client.query("COMMIT");
      return 0;
    }
    const publish = redis.multi();
    for (const row of rows) {
      publish.xadd(
        stream,
        "*",
        "outboxId",
        row.id,
        "topic",
        row.topic,
        "payload",
        JSON.stringify(row.payload),
      );
    }
    await publish.exec();
    await afterPublish?.(rows.map((row) => row.id));
    await client.query(`UPDATE ${tables.outbox} SET sent_at = now() WHERE id = ANY($1::bigint[])`, [
      rows.map((row) => row.id),
    ]);
    await client.query("COMMIT");
    return rows.length;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
