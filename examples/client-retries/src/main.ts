import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { IdempotencyKeyReusedError, type IdempotentFetchOptions, idempotentFetch } from "@idempotency/client";
import { MemoryStore } from "@idempotency/core";
import { flakyFetch } from "./flaky-fetch.js";
import { createApp, type Payment } from "./server.js";

/** What {@link run} found; the smoke test checks it, and `main` exits non-zero when it is not what it should be. */
export interface Outcome {
  status: number;
  replayed: boolean;
  attempts: number;
  body: Payment;
  reusedKeyRefused: boolean;
  payments: Payment[];
}

const pay = (invoice: string, amount: number): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ invoice, amount }),
});

/**
 * Starts the payments API on a free port and plays the client against it: one payment over a network that
 * loses the first two responses, then a mistake (the same key for another amount). `clientOptions` are added
 * to the client's (the smoke test injects its `sleep` and `random`, so it waits for nothing).
 */
export async function run(
  log: (line: string) => void = console.log,
  clientOptions: IdempotentFetchOptions = {},
): Promise<Outcome> {
  const { app, payments } = createApp(new MemoryStore());
  const server = app.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/payments`;
  try {
    log(`payments API on ${url}; the network will lose the first two responses`);
    const key = "invoice-2024-001"; // derived from your data: a restart of this script pays nothing twice
    const response = await idempotentFetch(url, pay("2024-001", 1200), {
      key,
      fetch: flakyFetch(2),
      baseDelayMs: 50,
      onRetry: ({ attempt, delayMs, reason }) =>
        log(`  attempt ${attempt} failed (${reason}); retrying with the same key in ${delayMs} ms`),
      ...clientOptions,
    });
    const body = (await response.json()) as Payment;
    log(
      `  ${response.status} after ${response.attempts} attempts, replayed: ${response.replayed}: ${JSON.stringify(body)}`,
    );
    log(`  payments made on the server: ${payments.length}`);

    log("the same key for a different amount (a bug in the caller):");
    let reusedKeyRefused = false;
    try {
      await idempotentFetch(url, pay("2024-001", 9900), { key });
    } catch (error) {
      if (!(error instanceof IdempotencyKeyReusedError)) throw error;
      reusedKeyRefused = true;
      log(`  ${error.name} (${error.code}): ${error.problem.title}`);
    }
    log(`  payments made on the server: ${payments.length}`);
    return {
      status: response.status,
      replayed: response.replayed,
      attempts: response.attempts,
      body,
      reusedKeyRefused,
      payments,
    };
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const outcome = await run();
  const ok =
    outcome.status === 201 && outcome.replayed && outcome.payments.length === 1 && outcome.reusedKeyRefused;
  console.log(
    ok ? "ok: one payment, the client got its original response" : "FAILED: the contract was broken",
  );
  process.exitCode = ok ? 0 : 1;
}
