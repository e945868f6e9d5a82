import type { Idempotency } from "@idempotency/core";
import type { Redis } from "ioredis";
import type pg from "pg";
import type { Tables } from "./schema.js";

/** What the consumer stores as the result of sending one e-mail, and returns for a duplicate. */
export interface EmailReceipt {
  outboxId: string;
  sentBy: string;
}

export interface ConsumerOptions {
  redis: Redis;
  /** An engine over any durable store; here the same PostgresStore table as the API's. */
  idempotency: Idempotency;
  pool: pg.Pool;
  tables: Tables;
  stream: string;
  group: string;
  /** This consumer's name in the group. */
  name: string;
  /** Called after the work of a message and before its XACK (the tests crash here). */
  afterWork?: (outboxId: string) => void | Promise<void>;
}

/** One delivery's outcome, for logs and tests. */
export interface Delivery {
  entryId: string;
  outboxId: string;
  receipt: EmailReceipt;
}

type Entries = Array<[string, string[]]>;

/**
 * A consumer in a Redis Streams consumer group that sends one e-mail per outbox row. The e-mail API is an
 * effect outside the database, so it cannot join a transaction: instead each message's work runs under
 * `idempotency.run()` keyed on the outbox row id. A message delivered twice (the relay published it again,
 * or it was redelivered after a consumer died before its `XACK`) returns the stored receipt without sending
 * again. The key is the outbox id, not the stream entry id: a duplicate publish has a new entry id.
 */
export class Consumer {
  readonly #options: ConsumerOptions;

  constructor(options: ConsumerOptions) {
    this.#options = options;
  }

  /** Creates the group (and the stream) when missing. */
  async ensureGroup(): Promise<void> {
    const { redis, stream, group } = this.#options;
    try {
      await redis.xgroup("CREATE", stream, group, "0", "MKSTREAM");
    } catch (error) {
      if (!String((error as Error).message).includes("BUSYGROUP")) throw error;
    }
  }

  /** Reads up to `count` new messages (waiting up to `blockMs`), processes and acknowledges each. */
  async poll(count = 50, blockMs = 100): Promise<Delivery[]> {
    const { redis, stream, group, name } = this.#options;
    const reply = (await redis.xreadgroup(
      "GROUP",
      group,
      name,
      "COUNT",
      count,
      "BLOCK",
      blockMs,
      "STREAMS",
      stream,
      ">",
    )) as Array<[string, Entries]> | null;
    return this.#processAll(reply?.[0]?.[1] ?? []);
  }

  /**
   * Takes over messages another consumer received but did not acknowledge for `minIdleMs` (it died), and
   * processes them: `XAUTOCLAIM` from the start of the pending list.
   */
  async reclaim(minIdleMs: number, count = 50): Promise<Delivery[]> {
    const { redis, stream, group, name } = this.#options;
    const [, entries] = (await redis.xautoclaim(stream, group, name, minIdleMs, "0-0", "COUNT", count)) as [
      string,
      Entries,
    ];
    return this.#processAll(entries.filter((entry) => entry !== null && entry[1] !== null));
  }

  async #processAll(entries: Entries): Promise<Delivery[]> {
    const deliveries: Delivery[] = [];
    for (const [entryId, fields] of entries) deliveries.push(await this.#process(entryId, fields));
    return deliveries;
  }

  async #process(entryId: string, fields: string[]): Promise<Delivery> {
    const { redis, idempotency, stream, group, afterWork } = this.#options;
    const outboxId = fieldOf(fields, "outboxId");
    const receipt = await idempotency.run(`outbox-${outboxId}`, () => this.#sendEmail(outboxId), {
      scope: group,
      waitMs: 5_000,
    });
    await afterWork?.(outboxId);
    await redis.xack(stream, group, entryId);
    return { entryId, outboxId, receipt };
  }

  /** The effect outside the database: here a row in the e-mail provider's log, written on its own. */
  async #sendEmail(outboxId: string): Promise<EmailReceipt> {
    const { pool, tables, name } = this.#options;
    await pool.query(`INSERT INTO ${tables.emails} (outbox_id, consumer) VALUES ($1, $2)`, [outboxId, name]);
    return { outboxId, sentBy: name };
  }
}

function fieldOf(fields: string[], name: string): string {
  const index = fields.indexOf(name);
  if (index === -1 || index % 2 === 1) throw new Error(`stream entry without ${name}`);
  return fields[index + 1] as string;
}
