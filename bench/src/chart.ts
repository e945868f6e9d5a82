/**
 * The main table as an SVG bar chart (results/latest.svg, written beside latest.md by the same run): server
 * CPU µs per request for every row, grouped as the table groups them, ours highlighted. CPU per request is
 * the steadiest figure on shared cores; req/s is printed at the end of each bar.
 */
import { frameworkOf, isBaseline, LIBRARY_LABELS, STORE_LABELS } from "./config.js";
import { isOurs, type Measurement, median, orderedMeasurements, SCENARIO_LABELS } from "./report.js";

const WIDTH = 960;
const LABEL_WIDTH = 430;
const BAR_HEIGHT = 18;
const ROW_GAP = 6;
const GROUP_GAP = 16;
const TOP = 56;
const COLOURS = { ours: "#2563eb", peer: "#9ca3af", baseline: "#16a34a" };

const xmlText = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export function renderChart(measurements: Measurement[], title: string): string {
  const rows = orderedMeasurements(measurements);
  const cpu = (m: Measurement) => median(m.rounds.map((r) => r.cpuMicrosPerRequest));
  const max = Math.max(1, ...rows.map(cpu));
  const scale = (WIDTH - LABEL_WIDTH - 150) / max;
  const parts: string[] = [];
  let y = TOP;
  let group = "";
  for (const m of rows) {
    const name = `${frameworkOf(m.target.library)} · ${STORE_LABELS[m.target.store]} · ${SCENARIO_LABELS[m.scenario]}`;
    const key = isBaseline(m.target.library) ? frameworkOf(m.target.library) : name;
    if (key !== group) {
      if (group !== "") y += GROUP_GAP;
      group = key;
      if (!isBaseline(m.target.library)) {
        parts.push(`<text x="8" y="${y + 12}" font-weight="bold">${xmlText(name)}</text>`);
        y += BAR_HEIGHT;
      }
    }
    const colour = isBaseline(m.target.library)
      ? COLOURS.baseline
      : isOurs(m.target.library)
        ? COLOURS.ours
        : COLOURS.peer;
    const width = Math.max(1, cpu(m) * scale);
    const rps = Math.round(median(m.rounds.map((r) => r.requestsPerSecond))).toLocaleString("en-US");
    parts.push(
      `<text x="${LABEL_WIDTH - 8}" y="${y + 13}" text-anchor="end">${xmlText(LIBRARY_LABELS[m.target.library])}</text>`,
      `<rect x="${LABEL_WIDTH}" y="${y}" width="${width.toFixed(1)}" height="${BAR_HEIGHT}" fill="${colour}"/>`,
      `<text x="${(LABEL_WIDTH + width + 6).toFixed(1)}" y="${y + 13}">${Math.round(cpu(m))} µs · ${rps} req/s</text>`,
    );
    y += BAR_HEIGHT + ROW_GAP;
  }
  const height = y + 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<title>${xmlText(`${title}: server CPU per request and req/s of every row`)}</title>`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="8" y="22" font-size="15" font-weight="bold">${xmlText(title)}</text>`,
    `<text x="8" y="40" fill="#4b5563">Server CPU per request (shorter is better), median over the rounds; req/s after each bar. Blue: @idempotency; grey: peers; green: the plain framework.</text>`,
    ...parts,
    "</svg>",
    "",
  ].join("\n");
}
