import { describe, expect, it } from "vitest";
import { ServerClock } from "../src/server-clock.js";

/** A server whose clock runs `offset` ms ahead of this process's monotonic clock. */
function setup(offset: number) {
  const local = { t: 1_000 };
  const clock = new ServerClock(() => local.t);
  return { local, clock, serverNow: () => local.t + offset };
}

describe("ServerClock", () => {
  it("gives no deadline (0) until a server time has been seen", () => {
    const { clock } = setup(5_000);
    expect(clock.known).toBe(false);
    expect(clock.deadline(1_000, 2_000)).toBe(0);
  });

  it("expresses a deadline on the server clock from the moment the call started", () => {
    const { local, clock, serverNow } = setup(1_700_000_000_000);
    clock.observe(serverNow());
    const startedAt = clock.localNow();
    local.t += 300;
    expect(clock.deadline(startedAt, 2_000)).toBe(1_700_000_000_000 + 1_000 + 2_000);
  });

  it("errs early, never late: a sample from a reply that arrived late moves the deadline earlier", () => {
    const { local, clock, serverNow } = setup(10_000);
    const readByServer = serverNow();
    local.t += 40; // the reply spent 40 ms in flight
    clock.observe(readByServer);
    expect(clock.deadline(local.t, 1_000)).toBe(local.t + 10_000 + 1_000 - 40);
  });

  it("keeps the best recent sample: a reply delayed behind a stalled event loop does not shrink deadlines", () => {
    const { local, clock, serverNow } = setup(10_000);
    clock.observe(serverNow());
    local.t += 1_000;
    const stale = serverNow();
    local.t += 3_000; // a 3 s stall before the reply was read
    clock.observe(stale);
    expect(clock.deadline(local.t, 2_000)).toBe(local.t + 10_000 + 2_000);
  });

  it("follows a server clock that was stepped back, within two windows", () => {
    const { local, clock } = setup(0);
    clock.observe(local.t + 10_000);
    local.t += 35_000; // next window: the old sample still counts
    clock.observe(local.t + 4_000);
    expect(clock.deadline(local.t, 0)).toBe(local.t + 10_000);
    local.t += 30_000; // a window later the stepped-back clock is all there is
    clock.observe(local.t + 4_000);
    expect(clock.deadline(local.t, 0)).toBe(local.t + 4_000);
  });

  it("ignores a sample that is not a finite number", () => {
    const { clock } = setup(0);
    clock.observe(Number.NaN);
    expect(clock.known).toBe(false);
  });
});
