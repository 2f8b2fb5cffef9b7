import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { RedisClient } from "@caracal/streams-core";
import { StreamSigner, Topics, decodeFieldList, signAuditData, streamKey } from "@caracal/streams-core";
import { createTestRedis, hasRedis, redisClusterAvailable, startRedisCluster } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { pino } from "pino";
import { Registry } from "prom-client";
import { generate } from "selfsigned";
import { afterEach, describe, expect, it } from "vitest";

import type { SiemExportConfig } from "./config.js";
import { createSiemExport } from "./exporter.js";
import { startHecServer, startSyslogServer } from "./test-support.js";

const AUDIT_KEY = randomBytes(32);
const signer = new StreamSigner(randomBytes(32));
const signing = { mode: "stable" as const, signer };
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const AUDIT = Topics.auditEvents.stream;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

function auditEvent(n: number, overrides: Record<string, unknown> = {}) {
  return {
    id: randomUUID(),
    zone_id: `zone-${n % 3}`,
    event_type: "token_exchange",
    request_id: `req-${n}`,
    decision: n % 5 === 0 ? "deny" : "allow",
    evaluation_status: "complete",
    determining_policies_json: [{ id: "p" }],
    diagnostics_json: n % 7 === 0 ? null : [],
    metadata_json: { resource: "resource://api", principal: `agent-${n}` },
    occurred_at: new Date(Date.UTC(2026, 11, 5, 12, 0, n)).toISOString(),
    seq: n,
    ...overrides,
  };
}

/** XADDs upstream-shaped frames `{id, data, sig}` (no `_sig`, as upstream's producers send them). */
async function publish(redis: RedisClient, keyPrefix: string, events: ReadonlyArray<Record<string, unknown>>, key = AUDIT_KEY): Promise<string[]> {
  const ids: string[] = [];
  for (const e of events) {
    const data = JSON.stringify(e);
    ids.push((await redis.xadd(streamKey(AUDIT, keyPrefix), "*", "id", String(e.id), "data", data, "sig", signAuditData(key, data))) as string);
  }
  return ids;
}

function baseConfig(overrides: Partial<SiemExportConfig>): SiemExportConfig {
  return { batchSize: 50, retryMaxMs: 200, sinkTimeoutMs: 2000, claimIdleMs: 600_000, ...overrides };
}

async function waitFor(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function start(redis: TestRedis | { client: RedisClient; keyPrefix: string }, config: SiemExportConfig, extra: { syslogCa?: string; registry?: Registry; name?: string } = {}) {
  const registry = extra.registry ?? new Registry();
  const exporter = createSiemExport({
    redis: redis.client,
    registry,
    logger,
    signing,
    auditKey: AUDIT_KEY,
    keyPrefix: redis.keyPrefix,
    consumerName: extra.name ?? "siem-1",
    config,
    blockMs: 100,
    ...(extra.syslogCa !== undefined ? { syslogCa: extra.syslogCa } : {}),
  });
  const controller = new AbortController();
  const done = exporter.run(controller.signal);
  const stop = async () => {
    controller.abort();
    await done;
  };
  cleanups.push(stop);
  return { exporter, registry, stop };
}

async function pending(redis: RedisClient, keyPrefix: string): Promise<number> {
  const summary = (await redis.xpending(streamKey(AUDIT, keyPrefix), "siem-export")) as [number, ...unknown[]];
  return Number(summary[0]);
}

async function deadLetters(redis: RedisClient, keyPrefix: string): Promise<Array<Record<string, string>>> {
  const dlq = Topics.auditEvents.deadLetterStream as string;
  return (await redis.xrange(streamKey(dlq, keyPrefix), "-", "+")).map(([, f]) => decodeFieldList(f) as Record<string, string>);
}

describe.skipIf(!hasRedis())("SIEM export against real sinks", () => {
  it("delivers every verified event once, in stream order, to files (raw and OCSF), HEC (gzip, token) and syslog (RFC 5424 + CEF)", async () => {
    const redis = await createTestRedis("siem");
    cleanups.push(() => redis.close());
    const hec = await startHecServer();
    cleanups.push(() => hec.close());
    const syslog = await startSyslogServer();
    cleanups.push(() => syslog.close());
    const dir = await mkdtemp(join(tmpdir(), "siem-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const events = Array.from({ length: 120 }, (_, n) => auditEvent(n));
    const entryIds = await publish(redis.client, redis.keyPrefix, events);
    // a forged frame (another key) is dead-lettered, never exported
    await publish(redis.client, redis.keyPrefix, [auditEvent(999)], randomBytes(32));

    const { registry } = start(
      redis,
      baseConfig({
        file: { dir, maxBytes: 8 * 1024, maxAgeMs: 3_600_000, format: "ocsf" },
        hec: { url: `${hec.url}/services/collector/event`, token: hec.token, format: "raw", sourcetype: "caracal:audit", gzip: true },
        syslog: { host: "127.0.0.1", port: syslog.port, tls: false },
      }),
    );
    await waitFor("every event at every sink", () => hec.events.length >= 120 && syslog.messages.length >= 120);
    await waitFor("nothing pending", async () => (await pending(redis.client, redis.keyPrefix)) === 0);

    expect(hec.events.map((e) => e.id)).toEqual(events.map((e) => e.id));
    expect(hec.events.map((e) => e.stream_entry_id)).toEqual(entryIds);
    // syslog: RFC 5424 header, CEF body with the event's id, in order
    expect(syslog.messages).toHaveLength(120);
    expect(syslog.messages[0]).toMatch(/^<8[46]>1 \d{4}-\d\d-\d\dT[^ ]+ \S+ caracal-streams \d+ token_exchange - CEF:0\|Caracal\|caracal-streams\|1\|token_exchange\|/);
    expect(syslog.messages.map((m) => /externalId=([^ ]+)/.exec(m)?.[1])).toEqual(events.map((e) => e.id));
    // files: rotated by size, OCSF API Activity records, every event once in order across the files
    const files = (await readdir(dir)).filter((f) => f.endsWith(".ndjson")).sort();
    expect(files.length).toBeGreaterThan(1);
    const lines = (await Promise.all(files.map((f) => readFile(join(dir, f), "utf8")))).join("").split("\n").filter((l) => l !== "");
    const records = lines.map((l) => JSON.parse(l) as { class_uid: number; metadata: { uid: string }; status: string });
    expect(records.map((r) => r.metadata.uid)).toEqual(events.map((e) => e.id));
    expect(records[0]).toMatchObject({ class_uid: 6003, class_name: "API Activity", status: "Failure" });
    expect(records[1]).toMatchObject({ status: "Success" });

    const dead = await deadLetters(redis.client, redis.keyPrefix);
    expect(dead.map((d) => d.reason)).toEqual(["signature_invalid"]);
    const text = await registry.metrics();
    expect(text).toMatch(/caracal_siem_events_exported_total\{sink="hec"\} 120/);
    expect(text).toMatch(/caracal_siem_sink_up\{sink="syslog"\} 1/);
  });

  it("dead-letters the one event HEC refuses as malformed, with HEC's answer, and delivers the rest", async () => {
    const redis = await createTestRedis("siem-bad");
    cleanups.push(() => redis.close());
    const hec = await startHecServer();
    cleanups.push(() => hec.close());
    const events = Array.from({ length: 30 }, (_, n) => auditEvent(n, n === 11 ? { event_type: "malformed" } : {}));
    const entryIds = await publish(redis.client, redis.keyPrefix, events);
    start(redis, baseConfig({ hec: { url: hec.url, token: hec.token, format: "raw", sourcetype: "caracal:audit", gzip: false } }));
    await waitFor("the rest delivered", () => hec.events.length >= 29);
    await waitFor("nothing pending", async () => (await pending(redis.client, redis.keyPrefix)) === 0);
    expect(hec.events.map((e) => e.id)).toEqual(events.filter((_, n) => n !== 11).map((e) => e.id));
    const dead = await deadLetters(redis.client, redis.keyPrefix);
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ reason: "sink_rejected", src_id: entryIds[11] });
    expect(dead[0]?.error).toContain("Invalid data format");
    expect(dead[0]?.["src.id"]).toBe(events[11]?.id);
  });

  it("holds the group back while HEC is down for 20 s, then delivers everything once, in order, when it is back", async () => {
    const redis = await createTestRedis("siem-down");
    cleanups.push(() => redis.close());
    const hec = await startHecServer();
    cleanups.push(() => hec.close());
    hec.mode = "down";
    const { registry } = start(redis, baseConfig({ batchSize: 10, hec: { url: hec.url, token: hec.token, format: "ocsf", sourcetype: "caracal:audit", gzip: true } }));
    const first = Array.from({ length: 25 }, (_, n) => auditEvent(n));
    await publish(redis.client, redis.keyPrefix, first);
    await waitFor("the sink reported down", async () => /caracal_siem_sink_up\{sink="hec"\} 0/.test(await registry.metrics()));
    // more events arrive while the sink is down: none is sent, the first batch stays pending
    const second = Array.from({ length: 25 }, (_, n) => auditEvent(100 + n));
    await publish(redis.client, redis.keyPrefix, second);
    // down for 20 s in all (the outage), retried with backoff meanwhile
    await new Promise((r) => setTimeout(r, 20_000));
    expect(hec.events).toHaveLength(0);
    expect(await pending(redis.client, redis.keyPrefix)).toBeGreaterThan(0);
    expect(hec.answers.filter((s) => s === 503).length).toBeGreaterThan(1);
    hec.mode = "up";
    await waitFor("all delivered", () => hec.events.length >= 50);
    await waitFor("nothing pending", async () => (await pending(redis.client, redis.keyPrefix)) === 0);
    await new Promise((r) => setTimeout(r, 300));
    expect(hec.events.map((e) => (e.metadata as { uid: string }).uid)).toEqual([...first, ...second].map((e) => e.id));
    expect(await registry.metrics()).toMatch(/caracal_siem_sink_up\{sink="hec"\} 1/);
  }, 60_000);

  it("speaks syslog over TLS to a server with a certificate it is told to trust", async () => {
    const redis = await createTestRedis("siem-tls");
    cleanups.push(() => redis.close());
    const pems = await generate([{ name: "commonName", value: "localhost" }], { keySize: 2048, extensions: [{ name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }, { type: 2, value: "localhost" }] }] });
    const syslog = await startSyslogServer({ key: pems.private, cert: pems.cert });
    cleanups.push(() => syslog.close());
    await publish(redis.client, redis.keyPrefix, Array.from({ length: 10 }, (_, n) => auditEvent(n)));
    start(redis, baseConfig({ syslog: { host: "localhost", port: syslog.port, tls: true } }), { syslogCa: pems.cert });
    await waitFor("delivered over TLS", () => syslog.messages.length >= 10);
    expect(syslog.messages.every((m) => m.includes("CEF:0|Caracal|"))).toBe(true);
  });
});

const clusterAvailable = await redisClusterAvailable();

describe.skipIf(!clusterAvailable)("SIEM export on a Redis Cluster", () => {
  it("exports every event once", async () => {
    const cluster = await startRedisCluster();
    cleanups.push(() => cluster.stop());
    const client = cluster.connect();
    cleanups.push(async () => client.disconnect());
    const hec = await startHecServer();
    cleanups.push(() => hec.close());
    const events = Array.from({ length: 40 }, (_, n) => auditEvent(n));
    await publish(client, "", events);
    start({ client, keyPrefix: "" }, baseConfig({ hec: { url: hec.url, token: hec.token, format: "raw", sourcetype: "caracal:audit", gzip: true } }));
    await waitFor("delivered", () => hec.events.length >= 40, 30_000);
    expect(hec.events.map((e) => e.id)).toEqual(events.map((e) => e.id));
  }, 90_000);
});
