/**
 * The output of every `pnpm bench:<name>`: a table on stdout and `bench-results/<name>.json` as
 * `{"metrics": [{name, value, unit, baseline, ratio, goal?}], ...settings}`, the baseline measured in the
 * same run. Imported as `@caracal/testkit/bench-report` (no vitest import, unlike the fixtures).
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";

import type { Redis } from "ioredis";

export interface BenchMetric {
  name: string;
  value: number;
  unit: string;
  baseline: number | null;
  ratio: number | null;
  goal?: string;
}

/** A metric beside its same-run baseline; ratio = value / baseline, three decimals. */
export function ratioMetric(name: string, value: number, baseline: number, unit: string, goal?: string): BenchMetric {
  const m: BenchMetric = { name, value, unit, baseline, ratio: Math.round((value / baseline) * 1000) / 1000 };
  if (goal !== undefined) m.goal = goal;
  return m;
}

/** A metric with no baseline (a peak, an absolute rate). */
export function plainMetric(name: string, value: number, unit: string, goal?: string): BenchMetric {
  const m: BenchMetric = { name, value, unit, baseline: null, ratio: null };
  if (goal !== undefined) m.goal = goal;
  return m;
}

export function rate(count: number, seconds: number): number {
  return Math.round(count / seconds);
}

export function printBenchTable(metrics: readonly BenchMetric[]): void {
  const rows = metrics.map((m) => [
    m.name,
    `${m.value.toLocaleString("en-US")} ${m.unit}`,
    m.baseline === null ? "" : m.baseline.toLocaleString("en-US"),
    m.ratio === null ? "" : m.ratio.toFixed(3),
    m.goal ?? "",
  ]);
  const header = ["metric", "value", "baseline", "ratio", "goal"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(" | ")} |`;
  console.log(line(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const r of rows) console.log(line(r));
}

/** The directory holding pnpm-workspace.yaml, so results land in <repo>/bench-results whatever the cwd. */
export function findRepoRoot(from = process.cwd()): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(resolve(dir, "pnpm-workspace.yaml"))) return dir;
    if (dirname(dir) === dir) return from;
  }
}

/**
 * Prints the table and writes `bench-results/<name>.json` (under BENCH_RESULTS_DIR if set, else the repo
 * root); `settings` (event counts, rounds, ...) are written beside the metrics. Returns the file path.
 */
export function reportBench(name: string, metrics: readonly BenchMetric[], settings: Record<string, unknown> = {}): string {
  printBenchTable(metrics);
  const out = resolve(process.env.BENCH_RESULTS_DIR ?? findRepoRoot(), "bench-results", `${name}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ ...settings, metrics }, null, 2)}\n`);
  process.stderr.write(`wrote ${out}\n`);
  return out;
}

/** Deletes every key under a benchmark's key prefix. */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== "0");
}
