/**
 * What each scenario did and saw: `report()` prints one line per scenario, so a failure explains itself,
 * and adds its figures to the run's totals (`last-run.json`, summed and printed by the global setup).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const FIGURES_FILE = fileURLToPath(new URL("../../last-run.json", import.meta.url));

export interface Figures {
  requests: number;
  faults: number;
  executions: number;
  records: number;
  fiveXx: number;
}

export const emptyFigures = (): Figures => ({ requests: 0, faults: 0, executions: 0, records: 0, fiveXx: 0 });

/** Counts of each value, as `201×1873 409×27` (sorted by value). */
export function tally(values: Iterable<string | number>): string {
  const counts = new Map<string, number>();
  for (const value of values) counts.set(String(value), (counts.get(String(value)) ?? 0) + 1);
  return [...counts.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([value, n]) => `${value}×${n}`)
    .join(" ");
}

export function report(scenario: string, line: string, figures: Partial<Figures> = {}): void {
  console.log(`[reliability] ${scenario}: ${line}`);
  const totals = existsSync(FIGURES_FILE)
    ? (JSON.parse(readFileSync(FIGURES_FILE, "utf8")) as Figures & { scenarios: number })
    : { ...emptyFigures(), scenarios: 0 };
  for (const name of Object.keys(emptyFigures()) as Array<keyof Figures>) totals[name] += figures[name] ?? 0;
  totals.scenarios += 1;
  writeFileSync(FIGURES_FILE, `${JSON.stringify(totals, null, 2)}\n`);
}
