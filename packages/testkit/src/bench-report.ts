/**
 * The output of every `pnpm bench:<name>`: a table on stdout and `bench-results/<name>.json` as
 * `{"metrics": [{name, value, unit, baseline, ratio, goal?}], ...settings}`, the baseline measured in the
 * same run. Imported as `@caracal/testkit/bench-report` (no vitest import, unlike the fixtures).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, resolve } from "node:path";

import type { Redis } from "ioredis";
import pg from "pg";

import { withDatabase } from "./urls.js";

export { withDatabase };

/** A benchmark's own empty database (`createScratchDatabase`). */
export interface ScratchDatabase {
  /** `caracal_bench_<label>_<random hex>`. */
  readonly name: string;
  /** The admin URL with this database. */
  readonly url: string;
  /** Drops the database, closing whatever connections it still has, and ends the admin connection. */
  drop(): Promise<void>;
  /** Ends the admin connection and leaves the database in place (to inspect it after the run). */
  keep(): Promise<void>;
}

/**
 * Creates an empty database for one benchmark run on the server of `adminUrl`, through an admin
 * connection that stays open until `drop` or `keep`.
 */
export async function createScratchDatabase(adminUrl: string, label: string): Promise<ScratchDatabase> {
  const name = `caracal_bench_${label}_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } catch (error) {
    await admin.end();
    throw error;
  }
  return {
    name,
    url: withDatabase(adminUrl, name),
    drop: async () => {
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    },
    keep: () => admin.end(),
  };
}

export interface BenchMetric {
  name: string;
  value: number;
  unit: string;
  baseline: number | null;
  ratio: number | null;
  goal?: string;
}

/** A metric beside its same-run baseline; ratio = value / baseline, three decimals. */
/** The fields of a revocation as the API would enqueue it (about 300 bytes), entry `i` of a benchmark's set. */
export function revocationFields(i: number): Record<string, string> {
  return {
    zone_id: "5f0c6a52-8c1e-4c53-9d0e-2f7a4b1c9e10",
    reason: "session_revoked_by_admin",
    session_id: randomUUID(),
    agent_session_id: randomUUID(),
    root_sid: randomUUID(),
    grant_id: randomUUID(),
    occurred_at: new Date(1_790_000_000_000 + i).toISOString(),
  };
}

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

/** Fields of `/proc/<pid>/stat` after the parenthesized command name (which may contain spaces). */
function procStat(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/**
 * The postmaster of the PostgreSQL server running backend `backendPid` (from `SELECT pg_backend_pid()`),
 * for `postgresCpuSeconds`. Linux with the server on this host only; undefined elsewhere.
 */
export function postgresServerPid(backendPid: number): number | undefined {
  const backend = procStat(backendPid);
  return backend === undefined ? undefined : Number(backend[1]);
}

/**
 * CPU seconds used so far by the PostgreSQL server whose postmaster is `serverPid`: its own time, the
 * time of its exited children (reaped, so counted in its cutime/cstime) and that of its live children.
 * Two readings around a phase give the server's CPU cost of that phase, which shows whether a run is
 * bound by the database or by the client. Undefined when /proc cannot tell.
 */
export function postgresCpuSeconds(serverPid: number | undefined): number | undefined {
  const ticksPerSecond = 100; // USER_HZ: 100 on every Linux architecture node supports
  if (serverPid === undefined) return undefined;
  const own = procStat(serverPid);
  if (own === undefined) return undefined;
  // utime, stime, cutime, cstime are fields 14-17 of stat(5): indexes 11-14 after the command name
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const s = procStat(Number(entry));
    if (s !== undefined && Number(s[1]) === serverPid) ticks += Number(s[11]) + Number(s[12]);
  }
  return ticks / ticksPerSecond;
}

/** CPU seconds (user + system, all threads) used so far by process `pid` on this host; undefined if unknown. */
export function pidCpuSeconds(pid: number | undefined): number | undefined {
  const s = pid === undefined ? undefined : procStat(pid);
  return s === undefined ? undefined : (Number(s[11]) + Number(s[12])) / 100;
}

/** The pid of the Redis server behind `redis` (INFO server `process_id`), for `pidCpuSeconds`. */
export async function redisServerPid(redis: Redis): Promise<number | undefined> {
  const match = /process_id:(\d+)/.exec(await redis.info("server"));
  return match === null ? undefined : Number(match[1]);
}

/** CPU seconds (user + system) used so far by this process. */
export function processCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** CPU seconds spent by this process and by the database and Redis servers (undefined where /proc cannot tell). */
export interface CpuSpent {
  node: number;
  postgres: number | undefined;
  redis: number | undefined;
}

/**
 * Measures the CPU of this process, of the PostgreSQL server and of the Redis server over a phase:
 * `const start = meter.now(); ...; const spent = meter.since(start)`. The server pids come from
 * `postgresServerPid` and `redisServerPid` (undefined: that figure is left out).
 */
export function cpuMeter(servers: { postgres?: number | undefined; redis?: number | undefined }): { now(): CpuSpent; since(start: CpuSpent): CpuSpent } {
  const now = (): CpuSpent => ({ node: processCpuSeconds(), postgres: postgresCpuSeconds(servers.postgres), redis: pidCpuSeconds(servers.redis) });
  const minus = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a - b);
  return {
    now,
    since: (start) => {
      const end = now();
      return { node: end.node - start.node, postgres: minus(end.postgres, start.postgres), redis: minus(end.redis, start.redis) };
    },
  };
}

/**
 * The highest ratio a measured path could reach against its baseline on this machine's cores, from the
 * CPU it used: if every core were busy all the time, an item would take (CPU per item of this process +
 * PostgreSQL + Redis) / cores of wall time, and the ratio would be the baseline's wall time per item over
 * that. A ratio goal above this bound cannot be met here without less CPU per item; the measured ratio
 * (baseline seconds / measured seconds, for the same items) over the bound is how well the path's stages
 * overlap on the cores. Undefined when a server's CPU is unknown (not on this host, or no /proc).
 */
export function coreBoundMetrics(path: string, spent: CpuSpent, items: number, measuredSeconds: number, baselineSeconds: number): BenchMetric[] | undefined {
  if (spent.postgres === undefined || spent.redis === undefined) return undefined;
  const cores = availableParallelism();
  const cpuPerItem = (spent.node + spent.postgres + spent.redis) / items;
  const bound = Math.round((baselineSeconds / items / (cpuPerItem / cores)) * 1000) / 1000;
  const measuredRatio = baselineSeconds / measuredSeconds;
  return [
    plainMetric(`${path}: CPU µs per item, this process + PostgreSQL + Redis`, Math.round(cpuPerItem * 1e7) / 10, "µs"),
    plainMetric(`${path}: highest ratio with all ${cores} cores busy (baseline wall per item / (that CPU / ${cores}))`, bound, "ratio"),
    plainMetric(`${path}: overlap reached (measured ratio / that bound)`, Math.round((measuredRatio / bound) * 1000) / 1000, "ratio"),
  ];
}
