import { expect, it } from "vitest";
import { run } from "../src/main.js";

it("one payment over a network that loses two responses; the same key for another amount is refused", async () => {
  const lines: string[] = [];
  const waits: number[] = [];
  const outcome = await run((line) => lines.push(line), {
    random: () => 0.5,
    sleep: async (ms) => {
      waits.push(ms);
    },
  });

  expect(outcome.status).toBe(201);
  expect(outcome.replayed).toBe(true);
  expect(outcome.attempts).toBe(3);
  expect(outcome.body).toEqual({ id: "pay_1", invoice: "2024-001", amount: 1200 });
  expect(outcome.payments).toEqual([{ id: "pay_1", invoice: "2024-001", amount: 1200 }]);
  expect(outcome.reusedKeyRefused).toBe(true);

  // Backoff with full jitter, random() = 0.5, baseDelayMs 50: half of 50, then half of 100.
  expect(waits).toEqual([25, 50]);
  expect(lines.slice(1, 3)).toEqual([
    "  attempt 1 failed (network); retrying with the same key in 25 ms",
    "  attempt 2 failed (network); retrying with the same key in 50 ms",
  ]);
  expect(lines).toContain(
    '  201 after 3 attempts, replayed: true: {"id":"pay_1","invoice":"2024-001","amount":1200}',
  );
  expect(lines).toContain("  IdempotencyKeyReusedError (ERR_IDEMPOTENCY_KEY_REUSED): Idempotency key reused");
  expect(lines.filter((line) => line === "  payments made on the server: 1")).toHaveLength(2);
});
