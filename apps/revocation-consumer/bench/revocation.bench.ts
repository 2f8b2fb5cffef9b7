/**
 * `pnpm bench:revocation`: writes bench-results/revocation.json.
 *
 * 1. The outbox-dispatcher and three revocation-consumer processes (built `dist/main.js`) on a scratch
 *    database and key prefix; revocations enqueued through `@caracal/outbox` `enqueue` (one transaction
 *    each) at a steady BENCH_RATE (200/s) for BENCH_SECONDS (30): commit -> visible in all three in-process
 *    caches, and commit -> the Redis key written, p50 / p99 / max (each consumer reports over IPC when a
 *    revocation reached its cache and when its keys were acknowledged by Redis; the machine's one clock).
 * 2. Seeding BENCH_SEED_ROWS (1,000,000) active revocations in a child process: seconds and peak RSS.
 * 3. In the same child: in-process `check` ops/s, and the HTTP check beside a bare hono route.
 *
 * Short mode for smoke tests: BENCH_SHORT=1 (3 s, 50,000 seed rows), or BENCH_SECONDS / BENCH_SEED_ROWS.
 * Environment: DATABASE_URL (admin URL; a scratch database is created and dropped), REDIS_URL.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

import { createPool, migrateDatabase } from "@caracal/db";
import { enqueue } from "@caracal/outbox";
import type { BenchMetric } from "@caracal/testkit/bench-report";
import { createScratchDatabase, deletePrefix, findRepoRoot, plainMetric, ratioMetric, reportBench } from "@caracal/testkit/bench-report";
import { Redis } from "ioredis";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const SHORT = process.env.BENCH_SHORT === "1" || process.env.BENCH_SHORT === "true";
const SECONDS = Number(process.env.BENCH_SECONDS ?? (SHORT ? 3 : 30));
const RATE = Number(process.env.BENCH_RATE ?? 200);
const SEED_ROWS = Number(process.env.BENCH_SEED_ROWS ?? (SHORT ? 50_000 : 1_000_000));
const REPLICAS = 3;
const log = (text: string) => process.stderr.write(`${text}\n`);
const root = findRepoRoot(fileURLToPath(new URL(".", import.meta.url)));

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => resolve(typeof a === "object" && a !== null ? a.port : 0));
    });
  });
}

function spawnService(main: string, env: Record<string, string>, ipc: boolean): ChildProcess {
  const child = spawn(process.execPath, [main], {
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    stdio: ipc ? ["ignore", "inherit", "inherit", "ipc"] : ["ignore", "inherit", "inherit"],
  });
  return child;
}

async function untilReady(port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`service on ${port} not ready`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(t);
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  const scratch = await createScratchDatabase(DATABASE_URL, "revocation");
  const redis = new Redis(REDIS_URL);
  const prefix = `bench:${randomBytes(4).toString("hex")}:`;
  const keyHex = randomBytes(32).toString("hex");
  const children: ChildProcess[] = [];
  const metrics: BenchMetric[] = [];
  try {
    await migrateDatabase(scratch.url);
    const pool = createPool(scratch.url, { max: 8 });
    const common = { DATABASE_URL: scratch.url, REDIS_URL, CARACAL_MODE: "rc", STREAMS_HMAC_KEY: keyHex, CARACAL_KEY_PREFIX: prefix };

    // ---- 1. commit -> caches and commit -> Redis key ------------------------------------------------
    const dispatcherPort = await freePort();
    children.push(spawnService(`${root}/apps/outbox-dispatcher/dist/main.js`, { ...common, PORT: String(dispatcherPort), HOSTNAME: "bench-dispatcher" }, false));
    const commitAt = new Map<string, number>();
    const cacheSeen = new Map<string, number[]>();
    const keyAt = new Map<string, number>();
    const ports: number[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      const port = await freePort();
      ports.push(port);
      const child = spawnService(`${root}/apps/revocation-consumer/dist/main.js`, { ...common, PORT: String(port), HOSTNAME: `bench-rev-${i}`, REVOCATION_REPORT_APPLIED_IPC: "true" }, true);
      child.on("message", (m: { kind: "cache" | "keys"; anchors: string[]; at: number }) => {
        for (const id of m.anchors) {
          if (m.kind === "keys") {
            if (!keyAt.has(id)) keyAt.set(id, m.at);
          } else {
            const seen = cacheSeen.get(id) ?? [];
            seen.push(m.at);
            cacheSeen.set(id, seen);
          }
        }
      });
      children.push(child);
    }
    await Promise.all([dispatcherPort, ...ports].map((p) => untilReady(p)));
    log(`dispatcher and ${REPLICAS} revocation consumers ready; enqueueing ${RATE}/s for ${SECONDS} s`);

    const total = Math.round(RATE * SECONDS);
    const t0 = performance.now();
    const inflight: Array<Promise<void>> = [];
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const sessionId = randomUUID();
      inflight.push(
        (async () => {
          const client = await pool.connect();
          try {
            await client.query("BEGIN");
            await enqueue(client, "sessionsRevoke", { zone_id: "bench-zone", reason: "bench", session_id: sessionId });
            await client.query("COMMIT");
            commitAt.set(sessionId, Date.now());
          } finally {
            client.release();
          }
        })(),
      );
    }
    await Promise.all(inflight);
    const sendSeconds = (performance.now() - t0) / 1000;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && ([...commitAt.keys()].some((id) => (cacheSeen.get(id)?.length ?? 0) < REPLICAS || !keyAt.has(id)))) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const cacheLat: number[] = [];
    const keyLat: number[] = [];
    let missing = 0;
    for (const [id, at] of commitAt) {
      const seen = cacheSeen.get(id);
      if (seen === undefined || seen.length < REPLICAS) missing++;
      else cacheLat.push(Math.max(...seen) - at);
      const k = keyAt.get(id);
      if (k !== undefined) keyLat.push(k - at);
    }
    cacheLat.sort((a, b) => a - b);
    keyLat.sort((a, b) => a - b);
    log(`sent ${total} in ${sendSeconds.toFixed(1)} s; ${missing} not seen by all caches`);
    metrics.push(
      plainMetric("commit_to_all_caches_p50_ms", percentile(cacheLat, 50), "ms"),
      plainMetric("commit_to_all_caches_p99_ms", percentile(cacheLat, 99), "ms", "<= 100"),
      plainMetric("commit_to_all_caches_max_ms", cacheLat[cacheLat.length - 1] ?? Number.NaN, "ms"),
      plainMetric("commit_to_redis_key_p50_ms", percentile(keyLat, 50), "ms"),
      plainMetric("commit_to_redis_key_p99_ms", percentile(keyLat, 99), "ms", "<= 100"),
      plainMetric("commit_to_redis_key_max_ms", keyLat[keyLat.length - 1] ?? Number.NaN, "ms"),
      plainMetric("revocations_not_in_all_caches", missing, "count", "0"),
      plainMetric("enqueue_rate_achieved", Math.round(total / sendSeconds), "per_s"),
    );
    await Promise.all(children.map(stop));
    children.length = 0;

    // ---- 2 and 3. seeding, in-process check, HTTP check ----------------------------------------------
    log(`inserting ${SEED_ROWS} active revocations`);
    await pool.query("TRUNCATE session_revocations");
    await pool.query(
      `INSERT INTO session_revocations (zone_id, anchor_kind, anchor_id, reason, revoked_at, expires_at, source_stream_id)
       SELECT 'bench-zone', 'session_id', gen_random_uuid()::text, 'bench', now(), now() + interval '1 day', g::text || '-0'
       FROM generate_series(1, $1::int) g`,
      [SEED_ROWS],
    );
    await pool.query("VACUUM ANALYZE session_revocations");
    await pool.end();
    const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./seed-child.ts", import.meta.url))], {
      env: { ...process.env, DATABASE_URL: scratch.url, REDIS_URL, BENCH_PREFIX: prefix },
      stdio: ["ignore", "pipe", "inherit"],
      cwd: fileURLToPath(new URL("..", import.meta.url)),
    });
    let out = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    if (code !== 0) throw new Error(`seed child exited ${code}`);
    const r = JSON.parse(out.trim().split("\n").pop() ?? "{}") as {
      seedSeconds: number;
      seedMaxRssBytes: number;
      entries: number;
      checkOpsPerSecond: number;
      httpRouteRps: number;
      httpBareRps: number;
    };
    if (r.entries !== SEED_ROWS) throw new Error(`seeded ${r.entries} of ${SEED_ROWS}`);
    metrics.push(
      plainMetric("seed_seconds", Math.round(r.seedSeconds * 1000) / 1000, "s", SEED_ROWS >= 1_000_000 ? "<= 5" : undefined),
      plainMetric("seed_peak_rss_mib", Math.round(r.seedMaxRssBytes / 1048576), "MiB", SEED_ROWS >= 1_000_000 ? "<= 256" : undefined),
      plainMetric("check_ops_per_s", Math.round(r.checkOpsPerSecond), "ops/s"),
      ratioMetric("http_check_vs_bare_hono_rps", Math.round(r.httpRouteRps), Math.round(r.httpBareRps), "req/s", ">= 0.8"),
    );
    reportBench("revocation", metrics, { seconds: SECONDS, rate: RATE, seedRows: SEED_ROWS, replicas: REPLICAS });
  } finally {
    await Promise.all(children.map(stop));
    await deletePrefix(redis, prefix).catch(() => undefined);
    redis.disconnect();
    await scratch.drop();
  }
}

await main();
