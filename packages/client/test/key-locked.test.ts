/**
 * A 409 `key-locked`: the first request with the key stopped without a result and the server
 * (`onLeaseExpired: "conflict"`) never runs it twice. The client takes it as final, whatever `retryOn` says.
 * Here from a scripted server that sends exactly our problem.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  IdempotencyInProgressError,
  IdempotencyKeyLockedError,
  IdempotentFetchError,
  IdempotentFetchGaveUpError,
  idempotentFetch,
  PROBLEM_TYPES,
} from "../src/index.js";
import { fakeClock, problemJson, type Running, type Scripted, scriptedServer } from "./support.js";

const open: Running[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((running) => running.close()));
});
async function serve(script: Scripted[]) {
  const server = await scriptedServer(script);
  open.push(server);
  return server;
}

const DETAIL =
  "A request with this Idempotency-Key stopped without a result, and this service never runs such a request " +
  "twice; the key stays locked until its record expires. Do not retry it; use a new key for a new attempt.";
const locked: Scripted = {
  status: 409,
  headers: { "content-type": "application/problem+json", "cache-control": "no-store" },
  body: problemJson(PROBLEM_TYPES.keyLocked, 409, "Idempotency key locked", DETAIL),
};
const created: Scripted = { status: 201, headers: { "content-type": "application/json" }, body: '{"id":1}' };
const post: RequestInit = { method: "POST", headers: { "content-type": "application/json" }, body: "{}" };

describe("a 409 key-locked", () => {
  it("rejects with IdempotencyKeyLockedError after that one attempt: not a give-up, not in progress", async () => {
    const server = await serve([locked, created]);
    const clock = fakeClock();

    const error = await idempotentFetch(server.url, post, { ...clock.options, key: "pay-9" }).catch(
      (caught: unknown) => caught,
    );

    expect(error).toBeInstanceOf(IdempotencyKeyLockedError);
    expect(error).toBeInstanceOf(IdempotentFetchError);
    expect(error).not.toBeInstanceOf(IdempotentFetchGaveUpError);
    expect(error).not.toBeInstanceOf(IdempotencyInProgressError);
    const lockedError = error as IdempotencyKeyLockedError;
    expect(lockedError.name).toBe("IdempotencyKeyLockedError");
    expect(lockedError.code).toBe("ERR_IDEMPOTENCY_KEY_LOCKED");
    expect(lockedError.idempotencyKey).toBe("pay-9");
    expect(lockedError.attempts).toBe(1);
    expect(lockedError.problem).toEqual({
      type: PROBLEM_TYPES.keyLocked,
      title: "Idempotency key locked",
      status: 409,
      detail: DETAIL,
      instance: undefined,
      retryAfterMs: undefined,
      extensions: {},
    });
    expect(lockedError.message).toBe(
      'The server refused the request (409 key-locked): the first request with the idempotency key "pay-9" ' +
        "stopped without a result, and the server never runs it twice, so the key stays locked until its record " +
        "expires and retrying cannot help. Whether the operation took effect is unknown: check by hand (read the " +
        `resource it would have changed), and use a new key for a new attempt. Server: ${DETAIL}`,
    );
    // The 409 itself, body unread.
    expect(lockedError.response.status).toBe(409);
    expect((await lockedError.response.json()).type).toBe(PROBLEM_TYPES.keyLocked);
    expect(clock.delays).toEqual([]);
    expect(server.requests.map((request) => request.headers["idempotency-key"])).toEqual(['"pay-9"']);
  });

  it("is never retried, whatever retryOn says: with 409 listed, with it left out, with a generated key", async () => {
    for (const retryOn of [undefined, [409, 503], [503]]) {
      const server = await serve([locked, created]);
      const clock = fakeClock();
      const error = await idempotentFetch(server.url, post, {
        ...clock.options,
        maxAttempts: 10,
        ...(retryOn === undefined ? {} : { retryOn }),
      }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(IdempotencyKeyLockedError);
      expect((error as IdempotencyKeyLockedError).attempts).toBe(1);
      expect(clock.delays).toEqual([]);
      expect(server.requests).toHaveLength(1);
    }
  });

  it("after 409s in progress: the retries stop at the first key-locked answer", async () => {
    const inProgress: Scripted = {
      status: 409,
      headers: { "content-type": "application/problem+json", "retry-after": "1" },
      body: problemJson(PROBLEM_TYPES.inProgress, 409, "Request in progress"),
    };
    const server = await serve([inProgress, inProgress, locked, created]);
    const clock = fakeClock();
    const error = await idempotentFetch(server.url, post, { ...clock.options, maxAttempts: 10 }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(IdempotencyKeyLockedError);
    expect((error as IdempotencyKeyLockedError).attempts).toBe(3);
    expect(clock.delays).toEqual([1_000, 1_000]);
    expect(server.requests).toHaveLength(3);
  });

  it("is a response for a request without a key: there is no key to be locked", async () => {
    const server = await serve([locked, created]);
    const response = await idempotentFetch(server.url, { method: "PUT", body: "{}" }, fakeClock().options);
    expect([response.status, response.attempts, response.idempotencyKey]).toEqual([409, 1, null]);
    expect((await response.json()).type).toBe(PROBLEM_TYPES.keyLocked);
    expect(server.requests).toHaveLength(1);
  });
});
