/** Turns measurements into the markdown report printed to stdout and written to results/latest.md. */
import {
  frameworkOf,
  isBaseline,
  LIBRARY_LABELS,
  type Library,
  oursOn,
  STORE_LABELS,
  type Target,
} from "./config.js";
import type { DuplicatesReport } from "./duplicates.js";
import type { LoadOptions, LoadResult } from "./load.js";
import type { WiringReport } from "./verify.js";

export type Scenario = "baseline" | "first" | "replay";

export const SCENARIO_LABELS: Record<Scenario, string> = {
  baseline: "(a) baseline: no idempotency",
  first: "(b) first execution, unique keys",
  replay: "(c) replay of a completed key",
};

export interface Measurement {
  target: Target;
  scenario: Scenario;
  rounds: LoadResult[];
  /** Handler executions over the whole run (replay: the seed only, so 1 is correct). */
  executions: number[];
}

export interface Environment {
  date: string;
  node: string;
  cpus: string;
  os: string;
  loadBefore: string;
  loadAfter: string;
  redis: string | undefined;
  versions: Record<string, string>;
  command: string;
  load: LoadOptions;
  rounds: number;
  /** A smoke run: load on the server that passed the checks, too short for its numbers to mean much. */
  quick: boolean;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/** A markdown table with padded columns, as Biome formats them, so the written file passes `biome check`. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((cell, i) => Math.max(3, cell.length, ...rows.map((row) => row[i]?.length ?? 0)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)].join("\n");
}

export function isOurs(library: Library): boolean {
  return library === oursOn(frameworkOf(library));
}

function libraryCell(library: Library): string {
  return isOurs(library) ? `**${LIBRARY_LABELS[library]}**` : LIBRARY_LABELS[library];
}

const rps = (value: number) => Math.round(value).toLocaleString("en-US");
const ms = (value: number) => value.toFixed(value < 10 ? 1 : 0);

/** Grouped by framework, store, then scenario, ours first in each group: the order of the table and chart. */
export function orderedMeasurements(measurements: Measurement[]): Measurement[] {
  const frameworkOrder = ["express", "fastify", "hono", "koa"];
  const storeOrder = ["none", "memory", "redis", "sqlite", "postgres", "mongodb"];
  const scenarioOrder: Scenario[] = ["baseline", "first", "replay"];
  const libraryOrder: Library[] = [
    "plain",
    "ours",
    "express-idempotency",
    "node-idempotency",
    "plain-fastify",
    "ours-fastify",
    "plain-hono",
    "ours-hono",
    "plain-koa",
    "ours-koa",
  ];
  return [...measurements].sort(
    (a, b) =>
      frameworkOrder.indexOf(frameworkOf(a.target.library)) -
        frameworkOrder.indexOf(frameworkOf(b.target.library)) ||
      storeOrder.indexOf(a.target.store) - storeOrder.indexOf(b.target.store) ||
      scenarioOrder.indexOf(a.scenario) - scenarioOrder.indexOf(b.scenario) ||
      libraryOrder.indexOf(a.target.library) - libraryOrder.indexOf(b.target.library),
  );
}

function throughputTable(measurements: Measurement[]): string {
  const medianRps = (m: Measurement) => median(m.rounds.map((r) => r.requestsPerSecond));
  // Each row is compared with ours on its own framework (Express, Fastify, Hono or Koa), in the same scenario and store.
  const ours = (library: Library, scenario: Scenario, store: string) =>
    measurements.find(
      (m) =>
        m.target.library === oursOn(frameworkOf(library)) &&
        m.scenario === scenario &&
        m.target.store === store,
    );
  const sorted = orderedMeasurements(measurements);
  const rows = sorted.map((m) => {
    // The baseline is compared with ours on the memory store: what the middleware costs over no middleware.
    const reference =
      m.scenario === "baseline"
        ? ours(m.target.library, "first", "memory")
        : ours(m.target.library, m.scenario, m.target.store);
    const ratio = reference ? `${(medianRps(m) / medianRps(reference)).toFixed(2)}x` : "–";
    const all = m.rounds.map((r) => r.requestsPerSecond);
    const failures = sum(m.rounds.map((r) => r.non2xx + r.errors + r.timeouts + r.mismatches));
    return [
      SCENARIO_LABELS[m.scenario],
      STORE_LABELS[m.target.store],
      libraryCell(m.target.library),
      rps(medianRps(m)),
      `${rps(Math.min(...all))}–${rps(Math.max(...all))}`,
      ms(median(m.rounds.map((r) => r.p50))),
      ms(median(m.rounds.map((r) => r.p99))),
      Math.round(median(m.rounds.map((r) => r.cpuMicrosPerRequest))).toString(),
      isOurs(m.target.library) && m.scenario !== "baseline" ? "**1.00x**" : ratio,
      m.scenario === "replay" ? String(Math.max(...m.executions)) : "–",
      String(failures),
    ];
  });
  return table(
    [
      "scenario",
      "store",
      "library",
      "req/s",
      "req/s min–max",
      "p50 ms",
      "p99 ms",
      "server CPU µs/req",
      "req/s vs ours",
      "handler runs",
      "failed",
    ],
    rows,
  );
}

/** Redis commands per request and bytes per record, for the rows whose store was probed. */
function storeCostTable(measurements: Measurement[]): string {
  const figure = (values: Array<number | undefined>, digits: number) => {
    const known = values.filter((value): value is number => value !== undefined && Number.isFinite(value));
    return known.length === 0 ? "–" : median(known).toFixed(digits);
  };
  const rows = measurements
    .filter((m) => m.rounds.some((r) => r.storeCost !== undefined))
    .sort(
      (a, b) =>
        a.target.store.localeCompare(b.target.store) ||
        a.target.library.localeCompare(b.target.library) ||
        a.scenario.localeCompare(b.scenario),
    )
    .map((m) => [
      SCENARIO_LABELS[m.scenario],
      STORE_LABELS[m.target.store],
      libraryCell(m.target.library),
      figure(
        m.rounds.map((r) => r.storeCost?.commandsPerRequest),
        2,
      ),
      figure(
        m.rounds.map((r) => r.storeCost?.scriptsPerRequest),
        2,
      ),
      figure(
        m.rounds.map((r) => r.storeCost?.bytesPerRecord),
        0,
      ),
    ]);
  return table(
    [
      "scenario",
      "store",
      "library",
      "Redis commands per request",
      "of which script calls",
      "bytes per record",
    ],
    rows,
  );
}

function duplicatesTable(reports: DuplicatesReport[]): string {
  const rows = reports.map((r) => {
    const statuses = [...r.burstStatuses.entries()]
      .sort(([a], [b]) => a - b)
      .map(([status, count]) => `${status}×${count}`)
      .join(", ");
    const verdict = r.keysRunTwice === 0 ? "once per key" : `**${r.keysRunTwice} keys ran more than once**`;
    const i = r.immediate;
    const immediate = `${i.replayed} / ${i.conflict} / ${i.ranAgain}${i.other ? ` (other: ${i.other})` : ""}`;
    return [
      STORE_LABELS[r.target.store],
      libraryCell(r.target.library),
      `${r.keys} × ${r.burst}`,
      `${r.burstExecutions} (${verdict})`,
      statuses,
      immediate,
    ];
  });
  return table(
    [
      "store",
      "library",
      "keys × concurrent requests",
      "handler runs",
      "answers to the burst",
      "immediate retry: replayed / 409 / ran again",
    ],
    rows,
  );
}

function wiringTable(reports: WiringReport[]): string {
  const rows = reports
    .filter((r) => !isBaseline(r.target.library))
    .map((r) => [
      STORE_LABELS[r.target.store],
      libraryCell(r.target.library),
      "201, same body, handler not run",
      r.replayedHeader ? "yes" : "no",
      r.replaysLocation ? "yes" : "no",
      String(r.reusedKeyStatus),
    ]);
  return table(
    [
      "store",
      "library",
      "replay",
      "`Idempotent-Replayed: true`",
      "replays `Location`",
      "same key, other body",
    ],
    rows,
  );
}

export function renderReport(
  env: Environment,
  wiring: WiringReport[],
  duplicates: DuplicatesReport[],
  measurements: Measurement[],
): string {
  const versions = Object.entries(env.versions)
    .map(([name, version]) => `${name} ${version}`)
    .join(", ");
  return [
    "# Benchmark results",
    "",
    `- Date: ${env.date}`,
    `- Machine: ${env.cpus}, ${env.os}, Node.js ${env.node}`,
    `- Load average (1, 5, 15 min): ${env.loadBefore} before, ${env.loadAfter} after`,
    `- Redis: ${env.redis ?? "not measured"}`,
    `- Versions: ${versions}`,
    `- Command: \`${env.command}\``,
    "- How to read it, and the caveats: [bench/README.md](../README.md)",
    `- Load: autocannon, ${env.load.connections} connections, ${env.load.duration} s measured after ${env.load.warmup} s of warm-up, ` +
      (env.quick
        ? "once, on the server that passed the wiring checks (**quick smoke run: not a measurement**); "
        : `${env.rounds} interleaved round${env.rounds === 1 ? "" : "s"}, each run on a fresh server process; `) +
      "every request is `POST /orders` with a 1 KB JSON order and an `Idempotency-Key`.",
    "",
    "## Throughput and latency",
    "",
    "![Server CPU per request, by framework, store and scenario](latest.svg)",
    "",
    "Medians over the rounds. **req/s vs ours** is this row's req/s divided by ours on the same framework in " +
      "the same scenario and store: below 1.00x the row is slower than ours, above 1.00x faster. Each baseline " +
      "row is divided by ours on its framework in (b) on memory, so it shows the ceiling that the plain framework " +
      "reaches without any idempotency. **server CPU µs/req** is the server process's CPU time " +
      "(user + system) over the measured load divided by the requests answered: steadier than req/s on shared " +
      "cores, and the figure to read the overhead from. " +
      "**handler runs** in (c) counts executions over the whole run: 1 (the request that stored the key) is " +
      "correct. **failed** counts non-2xx answers, socket errors, timeouts and replays with another body.",
    "",
    throughputTable(measurements),
    "",
    "## What a request costs the store",
    "",
    "Medians over the rounds, read around the same measured loads. **Redis commands per request**: the calls " +
      "in Redis's `INFO commandstats` during the load divided by the requests answered, the commands a script " +
      "runs included; **of which script calls**: the EVAL/EVALSHA/FCALL among them, each one command sent " +
      "whatever it runs (what is sent is the script calls plus the other commands). **bytes per record**: for Redis, the growth of `used_memory` per " +
      "new record (keys, values and Redis's own overhead); for SQLite, the bytes of the record row's columns " +
      "(without SQLite's page and index overhead). MemoryStore's records are measured in `pnpm bench:engine`.",
    "",
    storeCostTable(measurements),
    "",
    "## Concurrent duplicates and immediate retries (correctness)",
    "",
    "Bursts of concurrent requests with one key while the handler runs (it waits 50 ms), then one retry per " +
      "key sent the moment the first response arrives. A correct library runs the handler once per key.",
    "",
    duplicatesTable(duplicates),
    "",
    "## Wiring checks (passed before measuring)",
    "",
    "Every library answered a replay with 201 and the first response's body, byte for byte, without running " +
      "the handler; ten unique keys each ran once; a used key with another body got a 4xx without running it.",
    "",
    wiringTable(wiring),
    "",
  ].join("\n");
}
