/**
 * Scenario (d), correctness rather than speed: bursts of concurrent requests with the same key while the
 * handler is still running, and retries sent the moment the first response arrives. Counts how often the
 * handler ran per key and what each library answered.
 */
import type { Target } from "./config.js";
import { executions, postOrder } from "./http.js";
import { ORDER_BODY } from "./order.js";

export interface DuplicatesReport {
  target: Target;
  keys: number;
  burst: number;
  /** Handler executions over all bursts (correct: one per key). */
  burstExecutions: number;
  /** Keys whose handler ran more than once. */
  keysRunTwice: number;
  /** Status code → how many burst requests got it. */
  burstStatuses: Map<number, number>;
  /** Immediate retries (one per key) that got the replay, a 409, or ran the handler again. */
  immediate: { replayed: number; conflict: number; ranAgain: number; other: number };
}

export async function runDuplicates(
  target: Target,
  baseUrl: string,
  tag: string,
  options: { keys: number; burst: number; handlerDelayMs: number },
): Promise<DuplicatesReport> {
  const post = (key: string) => postOrder(baseUrl, key, ORDER_BODY, options.handlerDelayMs);
  const burstStatuses = new Map<number, number>();
  let burstExecutions = 0;
  let keysRunTwice = 0;
  for (let k = 0; k < options.keys; k++) {
    const key = `${tag}-burst-${k}`;
    const before = await executions(baseUrl);
    const replies = await Promise.all(Array.from({ length: options.burst }, () => post(key)));
    for (const reply of replies) burstStatuses.set(reply.status, (burstStatuses.get(reply.status) ?? 0) + 1);
    const ran = (await executions(baseUrl)) - before;
    burstExecutions += ran;
    if (ran > 1) keysRunTwice += 1;
  }

  const immediate = { replayed: 0, conflict: 0, ranAgain: 0, other: 0 };
  for (let k = 0; k < options.keys; k++) {
    const key = `${tag}-retry-${k}`;
    const before = await executions(baseUrl);
    const first = await post(key);
    const retry = await post(key);
    const ranAgain = (await executions(baseUrl)) - before > 1;
    if (ranAgain) immediate.ranAgain += 1;
    else if (retry.status === first.status && retry.body === first.body) immediate.replayed += 1;
    else if (retry.status === 409) immediate.conflict += 1;
    else immediate.other += 1;
  }

  return {
    target,
    keys: options.keys,
    burst: options.burst,
    burstExecutions,
    keysRunTwice,
    burstStatuses,
    immediate,
  };
}
