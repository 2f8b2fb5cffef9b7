/**
 * `pnpm bench:audit-memory`: peak RSS of the real ingestor process (`dist/main.js`) draining a backlog of
 * large frames (issue 15 item 6). Publishes BENCH_FRAMES frames (default 300) of BENCH_FRAME_MIB MiB
 * (default 1) to a fresh key prefix and scratch database, starts the ingestor, samples
 * /proc/<pid>/status (VmHWM, VmRSS) until every entry is stored and acknowledged, prints the figures,
 * writes bench-results/audit-memory.json and exits 1 when the peak is over BENCH_RSS_LIMIT_MIB (default 512).
 * BENCH_SHORT=1: 30 frames (a smoke test). BENCH_BASELINE=1 also drains with the bound off
 * (AUDIT_MAX_INFLIGHT_BYTES of 64 GiB) for a same-run comparison; that run needs several GiB of memory.
 * Run with `npx tsx` after building the ingestor (the root script does both).
 */
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

import { migrateDatabase } from "@caracal/db";
import { StreamPublisher, Topics, signAuditData, signaturePolicy, streamKey } from "@caracal/streams-core";
import type { BenchMetric } from "@caracal/testkit/bench-report";
import { createScratchDatabase, deletePrefix, plainMetric, ratioMetric, reportBench } from "@caracal/testkit/bench-report";
import { Redis } from "ioredis";

import { makeEvent } from "../src/test-support/events.js";

const ADMIN_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const SHORT = process.env.BENCH_SHORT === "1";
const FRAMES = Number(process.env.BENCH_FRAMES ?? (SHORT ? 30 : 300));
const FRAME_MIB = Number(process.env.BENCH_FRAME_MIB ?? 1);
const LIMIT_MIB = Number(process.env.BENCH_RSS_LIMIT_MIB ?? 512);
const MAX_INFLIGHT = process.env.AUDIT_MAX_INFLIGHT_BYTES;
const MiB = 1024 * 1024;
const MAIN = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const AUDIT_KEY = randomBytes(32);
const STREAMS_KEY_HEX = randomBytes(32).toString("hex");

async function sparePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** Signed frames `{id, data, sig}` whose event metadata carries `FRAME_MIB` MiB of text. */
async function publish(redis: Redis, keyPrefix: string): Promise<void> {
  const publisher = new StreamPublisher({ redis, signing: signaturePolicy({ mode: "stable", keyHex: STREAMS_KEY_HEX }), keyPrefix });
  const producer = randomUUID();
  let prev = "";
  const blob = "x".repeat(Math.max(1, Math.round(FRAME_MIB * MiB) - 600));
  for (let i = 0; i < FRAMES; i += 10) {
    const batch = [];
    for (let j = i; j < Math.min(FRAMES, i + 10); j++) {
      const event = makeEvent({ zone_id: "zone-big", metadata_json: { blob, n: j }, chain: { producer, seq: j + 1, prev } });
      const data = JSON.stringify(event);
      const sig = signAuditData(AUDIT_KEY, data);
      prev = sig;
      batch.push({ stream: Topics.auditEvents.stream, fields: { id: event.id, data, sig } });
    }
    const outcomes = await publisher.publishBatch(batch);
    for (const o of outcomes) if (!o.ok) throw o.error;
  }
}

function procStatus(pid: number): { hwm: number; rss: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
    return { hwm: kib("VmHWM"), rss: kib("VmRSS") };
  } catch {
    return undefined;
  }
}

/** Stored and acknowledged: the group has read every entry and nothing is pending. */
async function drained(redis: Redis, key: string): Promise<boolean> {
  try {
    const groups = (await redis.xinfo("GROUPS", key)) as unknown[][];
    const g = groups[0];
    if (g === undefined) return false;
    const info = new Map<string, unknown>();
    for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
    return info.get("entries-read") === FRAMES && info.get("pending") === 0;
  } catch {
    return false;
  }
}

async function drain(label: string, maxInflight: string | undefined): Promise<{ peakBytes: number; seconds: number }> {
  const db = await createScratchDatabase(ADMIN_URL, "auditmem");
  const redis = new Redis(REDIS_URL);
  const keyPrefix = `bench:auditmem:${randomBytes(4).toString("hex")}:`;
  try {
    await migrateDatabase(db.url);
    await publish(redis, keyPrefix);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "",
      DATABASE_URL: db.url,
      REDIS_URL,
      AUDIT_HMAC_KEY: AUDIT_KEY.toString("hex"),
      STREAMS_HMAC_KEY: STREAMS_KEY_HEX,
      CARACAL_MODE: "stable",
      CARACAL_KEY_PREFIX: keyPrefix,
      HOSTNAME: "audit-memory-0",
      PORT: String(await sparePort()),
      LOG_LEVEL: "warn",
      ...(maxInflight !== undefined ? { AUDIT_MAX_INFLIGHT_BYTES: maxInflight } : {}),
    };
    for (const name of ["AUDIT_BATCH_SIZE", "AUDIT_CONCURRENCY", "AUDIT_VERIFY_WORKERS", "NODE_OPTIONS"]) {
      const v = process.env[name];
      if (v !== undefined) env[name] = v;
    }
    const started = performance.now();
    const child = spawn(process.execPath, [MAIN], { env, stdio: ["ignore", "ignore", "inherit"] });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    let peak = 0;
    const key = streamKey(Topics.auditEvents.stream, keyPrefix);
    const deadline = Date.now() + 600_000;
    for (;;) {
      const s = procStatus(child.pid!);
      if (s === undefined || child.exitCode !== null) throw new Error(`${label}: the ingestor exited early (code ${String(child.exitCode)})`);
      peak = Math.max(peak, s.hwm);
      if (await drained(redis, key)) break;
      if (Date.now() > deadline) throw new Error(`${label}: not drained in 600 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const seconds = (performance.now() - started) / 1000;
    peak = Math.max(peak, procStatus(child.pid!)?.hwm ?? 0);
    child.kill("SIGTERM");
    await exited;
    process.stdout.write(`${label}: ${FRAMES} frames of ${FRAME_MIB} MiB drained in ${seconds.toFixed(1)} s, peak RSS (VmHWM) ${(peak / MiB).toFixed(0)} MiB\n`);
    return { peakBytes: peak, seconds };
  } finally {
    await deletePrefix(redis, keyPrefix).catch(() => undefined);
    redis.disconnect();
    await db.drop().catch(() => undefined);
  }
}

const bounded = await drain("bounded", MAX_INFLIGHT);
const metrics: BenchMetric[] = [];
const goal = `< ${LIMIT_MIB} MiB`;
if (process.env.BENCH_BASELINE === "1") {
  const unbounded = await drain("unbounded", String(64 * 1024 * MiB));
  metrics.push(ratioMetric("peak_rss_bytes", bounded.peakBytes, unbounded.peakBytes, "bytes", goal));
} else {
  metrics.push(plainMetric("peak_rss_bytes", bounded.peakBytes, "bytes", goal));
}
metrics.push(plainMetric("drain_seconds", Math.round(bounded.seconds * 100) / 100, "s"));
reportBench("audit-memory", metrics, { frames: FRAMES, frameMiB: FRAME_MIB, maxInflightBytes: MAX_INFLIGHT ?? "default", short: SHORT });
if (bounded.peakBytes > LIMIT_MIB * MiB) {
  process.stderr.write(`peak RSS ${(bounded.peakBytes / MiB).toFixed(0)} MiB is over the ${LIMIT_MIB} MiB bound\n`);
  process.exit(1);
}
