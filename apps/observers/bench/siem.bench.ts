/**
 * `pnpm bench:siem`:
 * 1. SIEM export events/s to a local HEC server (group siem-export: verify, format, gzip, POST, ack)
 *    beside a bare loop that reads the same entries with XREADGROUP and POSTs the same batches (same
 *    envelopes, gzip) then XACKs, in the same run; goal export >= 0.7 of the bare loop;
 * 2. lifecycle observer events/s with derived state written, and CPU per event of this process.
 * BENCH_SHORT=1 runs a small set for smoke tests.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import { gzip } from "node:zlib";

import { migrateDatabase } from "@caracal/db";
import { createSiemExport, hecEvent } from "@caracal/siem-export";
import { startHecServer } from "@caracal/siem-export/test-support";
import { StreamPublisher, Topics, decodeFieldList, signAuditData, signaturePolicy, streamKey } from "@caracal/streams-core";
import { createScratchDatabase, deletePrefix, plainMetric, processCpuSeconds, rate, ratioMetric, reportBench } from "@caracal/testkit/bench-report";
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
const gzipAsync = promisify(gzip);
const exportEvents = process.env.BENCH_SHORT === "1" ? 5_000 : 50_000;
const EXPORT_BATCH = 500;

/** Publishes `n` upstream-shaped audit frames to the prefix's audit stream. */
async function publishAudit(auditKey: Buffer, n: number): Promise<void> {
  const key = streamKey(Topics.auditEvents.stream, prefix);
  for (let i = 0; i < n; i += 1000) {
    const pipeline = redis.pipeline();
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      const event = {
        id: randomUUID(), zone_id: `zone-${j % 8}`, event_type: "token_exchange", request_id: `req-${j}`, decision: j % 7 === 3 ? "deny" : "allow",
        evaluation_status: "complete", determining_policies_json: [{ id: "baseline-resource-scope" }], diagnostics_json: [{ code: "scope_allowed" }],
        metadata_json: { resource: "resource://api", principal: "[redacted]", client: `agent-${j % 11}` }, occurred_at: new Date(1_790_000_000_000 + j).toISOString(),
      };
      const data = JSON.stringify(event);
      pipeline.xadd(key, "*", "id", event.id, "data", data, "sig", signAuditData(auditKey, data));
    }
    await pipeline.exec();
  }
}

/** The baseline: XREADGROUP, the same HEC envelopes gzipped and POSTed, XACK; no verification. */
async function bareLoop(url: string, token: string, n: number): Promise<number> {
  const key = streamKey(Topics.auditEvents.stream, prefix);
  await redis.xgroup("CREATE", key, "bare", "0", "MKSTREAM");
  const t0 = performance.now();
  let done = 0;
  while (done < n) {
    const reply = (await redis.xreadgroup("GROUP", "bare", "bare-1", "COUNT", EXPORT_BATCH, "STREAMS", key, ">")) as Array<[string, Array<[string, string[]]>]> | null;
    const entries = reply?.[0]?.[1] ?? [];
    if (entries.length === 0) continue;
    const body = entries
      .map(([id, list]) => {
        const data = (decodeFieldList(list) as Record<string, string>).data ?? "{}";
        return hecEvent({ entryId: id, event: JSON.parse(data) as Record<string, unknown>, data }, { format: "raw", sourcetype: "caracal:audit" });
      })
      .join("\n");
    const response = await fetch(url, { method: "POST", headers: { Authorization: `Splunk ${token}`, "Content-Type": "application/json", "Content-Encoding": "gzip" }, body: await gzipAsync(body) });
    await response.text();
    await redis.xack(key, "bare", ...entries.map(([id]) => id));
    done += entries.length;
  }
  return (performance.now() - t0) / 1000;
}

async function exportRun(auditKey: Buffer, n: number): Promise<{ seconds: number; cpuUsPerEvent: number }> {
  const hec = await startHecServer();
  const controller = new AbortController();
  const cpu0 = processCpuSeconds();
  const t0 = performance.now();
  const siem = createSiemExport({
    redis, registry: new Registry(), logger: pino({ level: "silent" }), signing: signaturePolicy({ mode: "stable", keyHex: KEY }), auditKey,
    keyPrefix: prefix, consumerName: "bench-1", blockMs: 100,
    config: { batchSize: EXPORT_BATCH, retryMaxMs: 1000, sinkTimeoutMs: 10_000, claimIdleMs: 600_000, hec: { url: `${hec.url}/services/collector/event`, token: hec.token, format: "raw", sourcetype: "caracal:audit", gzip: true } },
  });
  const done = siem.run(controller.signal);
  while (hec.events.length < n) await new Promise((r) => setTimeout(r, 10));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = processCpuSeconds() - cpu0;
  controller.abort();
  await done;
  await hec.close();
  return { seconds, cpuUsPerEvent: Math.round((cpu / n) * 1e6) };
}

try {
  // 1. SIEM export vs the bare loop, on the same entries (each reads them in its own group)
  const auditKey = randomBytes(32);
  await publishAudit(auditKey, exportEvents);
  const bareHec = await startHecServer();
  const bareSeconds = await bareLoop(`${bareHec.url}/services/collector/event`, bareHec.token, exportEvents);
  await bareHec.close();
  const exported = await exportRun(auditKey, exportEvents);
  const exportMetrics = [
    ratioMetric("siem_export_events_per_s (HEC, gzip) vs bare XREADGROUP+POST loop", rate(exportEvents, exported.seconds), rate(exportEvents, bareSeconds), "events/s", "ratio >= 0.7"),
    plainMetric("siem_export_cpu_us_per_event (this process)", exported.cpuUsPerEvent, "us/event"),
  ];

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
    ...exportMetrics,
    plainMetric("lifecycle_observer_events_per_s", rate(events, seconds), "events/s"),
    plainMetric("lifecycle_observer_cpu_us_per_event", Math.round((cpu / events) * 1e6), "us/event"),
  ], { events, exportEvents, exportBatch: EXPORT_BATCH, short: process.env.BENCH_SHORT === "1" });
} finally {
  await deletePrefix(redis, prefix);
  await redis.quit();
  await db.drop();
}
