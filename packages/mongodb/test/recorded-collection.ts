// A RECORDED-CALL DOUBLE of the driver's `Collection`, for unit tests of the adapter's own logic: which
// commands it sends (filters, update pipelines, options), how it retries and how it maps errors.
//
// It does not execute anything: every reply is scripted by the test, and the expected commands and replies
// are written by hand from MongoDB's documented semantics (findAndModify with an update pipeline, `$$NOW`,
// `$literal`, findAndModify projections, E11000 on concurrent upserts). It NEVER stands in for the store
// contract: that is `test/conformance.test.ts`, which runs `describeStore` against a real MongoDB at
// `MONGODB_URL`.
import type { RecordCollection } from "../src/options.js";

export type CollectionMethod = keyof RecordCollection;

export interface RecordedCall {
  method: CollectionMethod;
  args: unknown[];
}

/** A scripted reply: a value to resolve with, an error to reject with, or a promise that never settles. */
export type ScriptedReply = { value: unknown } | { error: unknown } | { hang: true };

export class RecordedCollection implements RecordCollection {
  readonly calls: RecordedCall[] = [];
  readonly #replies = new Map<CollectionMethod, ScriptedReply[]>();

  /** Queues replies for `method`, used in order by its next calls. */
  script(method: CollectionMethod, ...replies: ScriptedReply[]): this {
    const queue = this.#replies.get(method) ?? [];
    queue.push(...replies);
    this.#replies.set(method, queue);
    return this;
  }

  /** The recorded calls of one method. */
  callsOf(method: CollectionMethod): unknown[][] {
    return this.calls.filter((call) => call.method === method).map((call) => call.args);
  }

  #answer(method: CollectionMethod, args: unknown[]): Promise<never> {
    this.calls.push({ method, args });
    const reply = this.#replies.get(method)?.shift();
    if (reply === undefined) {
      return Promise.reject(
        new Error(`RecordedCollection: no reply scripted for call ${this.calls.length} (${method})`),
      );
    }
    if ("hang" in reply) return new Promise<never>(() => undefined);
    if ("error" in reply) return Promise.reject(reply.error);
    return Promise.resolve(reply.value as never);
  }

  findOneAndUpdate(filter: object, update: object[], options: object): Promise<unknown> {
    return this.#answer("findOneAndUpdate", [filter, update, options]);
  }

  updateOne(filter: object, update: object[], options: object): Promise<{ matchedCount?: number }> {
    return this.#answer("updateOne", [filter, update, options]);
  }

  deleteOne(filter: object, options: object): Promise<{ deletedCount?: number }> {
    return this.#answer("deleteOne", [filter, options]);
  }

  findOneAndDelete(filter: object, options: object): Promise<unknown> {
    return this.#answer("findOneAndDelete", [filter, options]);
  }

  aggregate(pipeline: object[], options: object): { toArray(): Promise<unknown[]> } {
    const reply = this.#answer("aggregate", [pipeline, options]);
    reply.catch(() => undefined); // observed through toArray()
    return { toArray: () => reply };
  }

  createIndex(spec: object, options: object): Promise<string> {
    return this.#answer("createIndex", [spec, options]);
  }
}
