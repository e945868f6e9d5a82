/** Load from autocannon: a fixed number of connections for a fixed time, after a warm-up on the same server. */

import autocannon from "autocannon";
import { CPU_PATH, ORDERS_PATH } from "./config.js";
import { ORDER_BODY } from "./order.js";
import type { StoreCost } from "./store-cost.js";

export interface LoadOptions {
  connections: number;
  /** Seconds measured. */
  duration: number;
  /** Seconds of load before measuring, thrown away (JIT, connection set-up). 0: none. */
  warmup: number;
}

export interface LoadResult {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  responses2xx: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Responses whose body differed from the expected one (replay runs only). */
  mismatches: number;
  /** Server CPU time (user + system) per request answered during the measured load, in microseconds. */
  cpuMicrosPerRequest: number;
  /** What the measured load cost the store, when a probe was given. */
  storeCost?: StoreCost;
}

/** Reads a store's counters right before and right after the measured load (not the warm-up). */
export interface StoreProbe {
  before(): Promise<void>;
  after(requests: number): Promise<StoreCost>;
}

/** Every request carries a key: one fixed key (replay), or a new one each time (`keyPrefix-1`, `-2`, …). */
export type Keys = { fixed: string; expectBody?: string } | { uniquePrefix: string };

/** How long one load lasts: seconds, or a fixed number of requests. */
export type Extent = { duration: number } | { amount: number };

/** One autocannon run of `POST /orders` with these keys. */
export function sendLoad(url: string, keys: Keys, connections: number, extent: Extent) {
  const headers = { "content-type": "application/json" };
  if ("fixed" in keys) {
    return autocannon({
      url: `${url}${ORDERS_PATH}`,
      method: "POST",
      connections,
      ...extent,
      headers: { ...headers, "idempotency-key": keys.fixed },
      body: ORDER_BODY,
      expectBody: keys.expectBody,
    });
  }
  let sequence = 0;
  return autocannon({
    url: `${url}${ORDERS_PATH}`,
    connections,
    ...extent,
    requests: [
      {
        method: "POST",
        body: ORDER_BODY,
        setupRequest: (request) => {
          sequence += 1;
          return {
            ...request,
            headers: { ...headers, "idempotency-key": `${keys.uniquePrefix}-${sequence}` },
          };
        },
      },
    ],
  });
}

export async function runLoad(
  url: string,
  keys: Keys,
  options: LoadOptions,
  probe?: StoreProbe,
): Promise<LoadResult> {
  if (options.warmup > 0) {
    const warmupKeys = "fixed" in keys ? keys : { uniquePrefix: `${keys.uniquePrefix}-warmup` };
    await sendLoad(url, warmupKeys, options.connections, { duration: options.warmup });
  }
  await probe?.before();
  const cpuBefore = await serverCpu(url);
  const result = await sendLoad(url, keys, options.connections, { duration: options.duration });
  const cpuAfter = await serverCpu(url);
  const storeCost = await probe?.after(result.requests.total);
  return {
    ...(storeCost ? { storeCost } : {}),
    cpuMicrosPerRequest: (cpuAfter - cpuBefore) / Math.max(1, result.requests.total),
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    responses2xx: result["2xx"],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    mismatches: result.mismatches,
  };
}

/** The server process's CPU time so far, in microseconds (its `GET /__bench/cpu`). */
export async function serverCpu(url: string): Promise<number> {
  const response = await fetch(`${url}${CPU_PATH}`);
  return ((await response.json()) as { micros: number }).micros;
}
