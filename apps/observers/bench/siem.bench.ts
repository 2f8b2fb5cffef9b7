/**
 * `pnpm bench:siem`: lifecycle observer events/s with derived state written, and CPU per event of this
 * process. BENCH_SHORT=1 runs a small set for smoke tests. The SIEM export half of the benchmark
 * (export to a local HEC server beside a bare XREADGROUP+POST loop) is not built yet.
 */
import { migrateDatabase } from "@caracal/db";
import { StreamPublisher, Topics, signaturePolicy } from "@caracal/streams-core";
import { createScratchDatabase, deletePrefix, plainMetric, processCpuSeconds, rate, reportBench } from "@caracal/testkit/bench-report";
import { Hono } from "hono";
import { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";
import { Registry } from "prom-client";

import { loadConfig, startObservers } from "../src/index.js";

const KEY = "d4".repeat(32);
const adminUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const redisUrl = () => process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const uniquePrefix = (label: string) => `${label}:${Date.now().toString(36)}:`;
const events = process.env.BENCH_SHORT === "1" ? 2_000 : 100_000;
const db = await createScratchDatabase(adminUrl, "siem");
const redis = new Redis(redisUrl());
const prefix = uniquePrefix("bench-siem");
try {
  await migrateDatabase(db.url);
  const publisher = new StreamPublisher({ redis, keyPrefix: prefix, signing: signaturePolicy({ mode: "stable", keyHex: KEY }) });
  const kinds = ["spawn", "suspend", "resume", "terminate"] as const;
  for (let i = 0; i < events; i += 1000) {
    await publisher.publishBatch(
      Array.from({ length: Math.min(1000, events - i) }, (_, j) => ({
        stream: Topics.agentsLifecycle.stream,
        fields: { event: kinds[(i + j) % 4]!, zone_id: `z${(i + j) % 8}`, agent_session_id: `s${Math.floor((i + j) / 4)}`, occurred_at: new Date(1_790_000_000_000 + i + j).toISOString() },
      })),
    );
  }
  const config = loadConfig({
    DATABASE_URL: db.url, REDIS_URL: redisUrl(), STREAMS_HMAC_KEY: KEY, CARACAL_MODE: "stable", CARACAL_KEY_PREFIX: prefix,
    OBSERVERS_INVOCATIONS: "false", OBSERVERS_DELEGATIONS: "false", OBSERVERS_AUDIT_DLQ: "false", OBSERVERS_DEAD_LETTERS: "false", PORT: "0",
  });
  const pool = new pg.Pool({ connectionString: db.url, max: 4 });
  const controller = new AbortController();
  const cpu0 = processCpuSeconds();
  const t0 = performance.now();
  const app = await startObservers(
    { config, logger: pino({ level: "silent" }), redis, pool, registry: new Registry(), signal: controller.signal, http: new Hono(), ready: () => undefined, onStop: () => undefined },
    { blockMs: 100 },
  );
  for (;;) {
    const n = (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM observed_agent_session_events")).rows[0]!.n;
    if (n >= events) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = processCpuSeconds() - cpu0;
  controller.abort();
  await app.done;
  await pool.end();
  reportBench("siem", [
    plainMetric("lifecycle_observer_events_per_s", rate(events, seconds), "events/s"),
    plainMetric("lifecycle_observer_cpu_us_per_event", Math.round((cpu / events) * 1e6), "us/event"),
  ], { events, short: process.env.BENCH_SHORT === "1" });
} finally {
  await deletePrefix(redis, prefix);
  await redis.quit();
  await db.drop();
}
