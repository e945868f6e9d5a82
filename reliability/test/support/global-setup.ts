import { existsSync, readFileSync, rmSync } from "node:fs";
import { FIGURES_FILE } from "./report.js";

/** Starts the run's totals afresh, and prints them when every file has run. */
export default function setup(): () => void {
  rmSync(FIGURES_FILE, { force: true });
  const started = performance.now();
  return () => {
    if (!existsSync(FIGURES_FILE)) return;
    const totals = JSON.parse(readFileSync(FIGURES_FILE, "utf8"));
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `[reliability] totals: ${totals.scenarios} scenarios, ${totals.requests} requests sent, ` +
        `${totals.faults} faults injected, ${totals.executions} executions counted, ` +
        `${totals.records} records checked, ${totals.fiveXx} 5xx seen, ${seconds} s`,
    );
  };
}
