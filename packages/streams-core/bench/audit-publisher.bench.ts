/**
 * `pnpm bench:audit-publisher`: the AuditPublisher (validate, chain, sign `sig` and `_sig`, 50 ms /
 * 1,000-event pipelined batches) beside its baseline, the same frames XADDed one round trip per event,
 * measured in the same run on a fresh key prefix; plus the spill path (Redis down: batches fsynced to
 * the replay directory) and the replay at start(). Prints a table and writes
 * bench-results/audit-publisher.json.
 *
 * Environment: REDIS_URL (default redis://127.0.0.1:6379), BENCH_EVENTS (default 100000),
 * BENCH_ROUNDS (default 2: best of n, alternating the publisher and its baseline).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { BenchMetric } from "@caracal/testkit/bench-report";
import { deletePrefix, reportBench } from "@caracal/testkit/bench-report";
import { Redis } from "ioredis";

import { StreamPublisher } from "../src/publisher.js";
import { Topics, streamKey } from "../src/registry.js";
import type { AuditEvent } from "../src/schemas.js";
import { StreamSigner } from "../src/signing.js";
import type { SignaturePolicy } from "../src/signing.js";
import { encodeAuditFrame } from "../src/audit/frame.js";
import { AuditPublisher } from "../src/audit/publisher.js";

type Metric = BenchMetric;

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const STREAM = Topics.auditEvents.stream;
const signing: SignaturePolicy = { mode: "stable", signer: new StreamSigner(randomBytes(32)) };
const auditKey = randomBytes(32);

/** An STS decision event (about 600 bytes of `data`). */
function event(i: number): AuditEvent {
  return {
    id: randomUUID(),
    zone_id: `zone-${i % 8}`,
    event_type: "token_exchange",
    request_id: randomUUID(),
    decision: i % 7 === 0 ? "deny" : "allow",
    policy_set_id: "ps-5f0c6a52",
    policy_set_version_id: "psv-2f7a4b1c",
    manifest_sha: "sha256:3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
    evaluation_status: "complete",
    determining_policies_json: [{ id: "baseline-resource-scope" }],
    diagnostics_json: [{ code: "scope_allowed" }],
    metadata_json: { client: `agent-${i % 13}`, resource: "resource://api", trace_id: randomBytes(16).toString("hex") },
    occurred_at: new Date(1_790_000_000_000 + i).toISOString(),
  };
}

async function seconds(run: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await run();
  return (performance.now() - t0) / 1000;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = net.createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => done(port));
    });
  });
}

async function main(): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  const prefix = `bench-audit:${randomBytes(4).toString("hex")}:`;
  const events = Array.from({ length: EVENTS }, (_, i) => event(i));
  const baselineCount = Math.min(EVENTS, 20_000);
  let best = { publisher: Infinity, baseline: Infinity, batches: 0 };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      let batches = 0;
      const publisher = new AuditPublisher({ redis, signing, auditKey, keyPrefix: `${prefix}p${round}:`, metrics: { batchSent: () => batches++ } });
      const p = await seconds(async () => {
        for (const e of events) await publisher.publish(e);
        await publisher.flush();
      });
      await publisher.close();
      if (p < best.publisher) best = { ...best, publisher: p, batches };
      // Baseline: the same frames (encoded and signed the same way), one XADD round trip per event.
      const single = new StreamPublisher({ redis, signing, keyPrefix: `${prefix}b${round}:` });
      const b = await seconds(async () => {
        for (let i = 0; i < baselineCount; i++) await single.publish(STREAM, encodeAuditFrame(events[i] as AuditEvent, auditKey));
      });
      best.baseline = Math.min(best.baseline, b);
      if ((await redis.xlen(streamKey(STREAM, `${prefix}p${round}:`))) !== EVENTS) throw new Error("publisher lost events");
    }

    // Spill: Redis unreachable, every batch fsynced to the replay directory; then replay at start().
    const dir = await mkdtemp(join(tmpdir(), "bench-audit-replay-"));
    const spillCount = Math.min(EVENTS, 50_000);
    const down = new Redis(`redis://127.0.0.1:${await freePort()}`, { maxRetriesPerRequest: 0, retryStrategy: () => 1000, lazyConnect: true });
    down.on("error", () => undefined);
    const spiller = new AuditPublisher({ redis: down, signing, auditKey, replayDir: dir, publishTimeoutMs: 50, replayIntervalMs: 60_000 });
    const spill = await seconds(async () => {
      for (let i = 0; i < spillCount; i++) await spiller.publish(events[i] as AuditEvent);
      await spiller.flush();
    });
    await spiller.close();
    down.disconnect();
    const replayer = new AuditPublisher({ redis, signing, auditKey, keyPrefix: `${prefix}r:`, replayDir: dir });
    let drained = false;
    const replay = await seconds(async () => {
      drained = await replayer.start();
    });
    await replayer.close();
    await rm(dir, { recursive: true, force: true });
    if (!drained || (await redis.xlen(streamKey(STREAM, `${prefix}r:`))) !== spillCount) throw new Error("replay lost events");

    const publisherRate = Math.round(EVENTS / best.publisher);
    const baselineRate = Math.round(baselineCount / best.baseline);
    const metrics: Metric[] = [
      { name: "audit_publisher_events_per_s", value: publisherRate, unit: "events/s", baseline: baselineRate, ratio: +(publisherRate / baselineRate).toFixed(2) },
      {
        name: "audit_publisher_round_trips_per_1000_events",
        value: +((best.batches * 1000) / EVENTS).toFixed(2),
        unit: "round trips",
        baseline: 1000,
        ratio: +(1000 / ((best.batches * 1000) / EVENTS)).toFixed(1),
      },
      { name: "audit_publisher_spill_events_per_s", value: Math.round(spillCount / spill), unit: "events/s", baseline: null, ratio: null },
      { name: "audit_publisher_replay_events_per_s", value: Math.round(spillCount / replay), unit: "events/s", baseline: null, ratio: null },
    ];
    console.log(`audit publisher, ${EVENTS} events, best of ${ROUNDS} (baseline: ${baselineCount} events, one XADD each)`);
    reportBench("audit-publisher", metrics, { events: EVENTS, rounds: ROUNDS });
  } finally {
    await deletePrefix(redis, prefix);
    redis.disconnect();
  }
}

await main();
