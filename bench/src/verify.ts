/**
 * Wiring checks, run against every server before anything is measured. A library whose wiring is wrong
 * would make its numbers meaningless (a replay that runs the handler, a 500 measured as speed), so any
 * failed check stops the benchmark with the reason.
 */
import { setTimeout as delay } from "node:timers/promises";
import { isBaseline, LIBRARY_LABELS, STORE_LABELS, type Target } from "./config.js";
import { executions, postOrder, type Reply } from "./http.js";
import { OTHER_ORDER_BODY } from "./order.js";

export interface WiringReport {
  target: Target;
  /** Status of a retry under a used key with another body (the libraries differ: 422, 417…). */
  reusedKeyStatus: number;
  /** Whether the replay carries `Idempotent-Replayed: true`. */
  replayedHeader: boolean;
  /** Whether the replay carries the handler's `Location` header. */
  replaysLocation: boolean;
}

export class WiringError extends Error {
  constructor(target: Target, message: string) {
    super(`${LIBRARY_LABELS[target.library]} over ${STORE_LABELS[target.store]}: ${message}`);
    this.name = "WiringError";
  }
}

const UNIQUE_KEYS = 10;

/** How often a replay that answers 409 is retried (a library may store the response after sending it). */
const REPLAY_ATTEMPTS = 50;

function expectCreated(target: Target, reply: Reply, what: string): { id: string } {
  if (reply.status !== 201) {
    throw new WiringError(target, `${what} answered ${reply.status}, expected 201: ${reply.body}`);
  }
  const order = JSON.parse(reply.body) as { id?: unknown; status?: unknown };
  if (typeof order.id !== "string" || order.status !== "created") {
    throw new WiringError(target, `${what} did not return a created order: ${reply.body}`);
  }
  return { id: order.id };
}

async function expectExecutions(target: Target, baseUrl: string, expected: number, when: string) {
  const actual = await executions(baseUrl);
  if (actual !== expected) {
    throw new WiringError(target, `the handler ran ${actual} times ${when}, expected ${expected}`);
  }
}

/** Replays `key` and returns the reply, retrying while the first request is still being stored (409). */
export async function replay(baseUrl: string, key: string): Promise<Reply> {
  let reply = await postOrder(baseUrl, key);
  for (let attempt = 1; reply.status === 409 && attempt < REPLAY_ATTEMPTS; attempt++) {
    await delay(2);
    reply = await postOrder(baseUrl, key);
  }
  return reply;
}

/** Checks one running server; throws `WiringError` on the first thing that is wrong. */
export async function verifyWiring(target: Target, baseUrl: string, tag: string): Promise<WiringReport> {
  const seedKey = `${tag}-seed`;
  const seed = await postOrder(baseUrl, seedKey);
  const seedOrder = expectCreated(target, seed, "the first request");
  await expectExecutions(target, baseUrl, 1, "after the first request");

  if (isBaseline(target.library)) {
    expectCreated(target, await postOrder(baseUrl, seedKey), "a second request");
    await expectExecutions(target, baseUrl, 2, "after two requests without idempotency");
    return { target, reusedKeyStatus: 201, replayedHeader: false, replaysLocation: false };
  }

  const again = await replay(baseUrl, seedKey);
  expectCreated(target, again, "the replay");
  if (again.body !== seed.body) {
    throw new WiringError(target, `the replay body differs:\n${again.body}\nfirst:\n${seed.body}`);
  }
  await expectExecutions(target, baseUrl, 1, "after a replay");

  const firsts = new Map<string, string>();
  const ids = new Set<string>([seedOrder.id]);
  for (let i = 0; i < UNIQUE_KEYS; i++) {
    const key = `${tag}-unique-${i}`;
    const reply = await postOrder(baseUrl, key);
    ids.add(expectCreated(target, reply, `unique key ${i}`).id);
    firsts.set(key, reply.body);
  }
  if (ids.size !== UNIQUE_KEYS + 1)
    throw new WiringError(target, "unique keys did not create distinct orders");
  await expectExecutions(target, baseUrl, UNIQUE_KEYS + 1, `after ${UNIQUE_KEYS} unique keys`);
  for (const [key, body] of firsts) {
    const reply = await replay(baseUrl, key);
    if (reply.status !== 201 || reply.body !== body) {
      throw new WiringError(target, `replaying ${key} answered ${reply.status} with another body`);
    }
  }
  await expectExecutions(target, baseUrl, UNIQUE_KEYS + 1, "after replaying the unique keys");

  const reused = await postOrder(baseUrl, seedKey, OTHER_ORDER_BODY);
  if (reused.status < 400 || reused.status > 499) {
    throw new WiringError(target, `a used key with another body answered ${reused.status}, expected a 4xx`);
  }
  await expectExecutions(target, baseUrl, UNIQUE_KEYS + 1, "after reusing a key with another body");

  return {
    target,
    reusedKeyStatus: reused.status,
    replayedHeader: again.headers["idempotent-replayed"] === "true",
    replaysLocation: again.headers.location === seed.headers.location,
  };
}
