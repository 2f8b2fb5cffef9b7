import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { outboxEntry } from "@caracal/outbox";
import { AuditPublisher, StreamSigner, Topics, decodeFieldList, streamKey, verifyAuditFrame } from "@caracal/streams-core";
import type { Fields } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import { afterEach, describe, expect, it } from "vitest";

import { OutboxProducers, runTraffic } from "./traffic.js";

const here = dirname(fileURLToPath(import.meta.url));
const mainJs = join(here, "..", "dist", "main.js");
const auditKey = randomBytes(32);
const signer = new StreamSigner(randomBytes(32));
const AUDIT = Topics.auditEvents.stream;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function fixtures() {
  const redis = await createTestRedis("traffic");
  cleanups.push(() => redis.close());
  const db = await createMigratedDatabase();
  cleanups.push(() => db.drop());
  return { redis, db };
}

async function auditFrames(redis: Awaited<ReturnType<typeof createTestRedis>>): Promise<Fields[]> {
  const raw = await redis.client.xrange(streamKey(AUDIT, redis.keyPrefix), "-", "+");
  return raw.map(([, list]) => decodeFieldList(list) as Fields);
}

describe.skipIf(!hasRedis() || !hasPostgres())("traffic generator", () => {
  it("produces audit events and outbox rows at the configured rates, all valid", async () => {
    const { redis, db } = await fixtures();
    const publisher = new AuditPublisher({ redis: redis.client, keyPrefix: redis.keyPrefix, signing: { mode: "stable", signer }, auditKey });
    const zones = ["zone-1", "zone-2"];
    const stats = await runTraffic({ audit: publisher, pool: db.pool, auditRate: 200, outboxRate: 20, zones, tickMs: 20 }, AbortSignal.timeout(1000));
    await publisher.close();
    // ~1 s at 200/s and 20/s: the average rate is kept, within scheduling slack.
    expect(stats.audit).toBeGreaterThanOrEqual(170);
    expect(stats.audit).toBeLessThanOrEqual(201);
    expect(stats.outbox).toBeGreaterThanOrEqual(15);
    expect(stats.outbox).toBeLessThanOrEqual(21);
    expect(stats.outboxErrors).toBe(0);

    const frames = await auditFrames(redis);
    expect(frames).toHaveLength(stats.audit);
    const perZone = new Map<string, number>();
    for (const f of frames) {
      expect(signer.verify(AUDIT, f)).toBe("valid");
      const { event } = verifyAuditFrame(f, auditKey);
      perZone.set(event.zone_id, (perZone.get(event.zone_id) ?? 0) + 1);
      expect(event.chain?.seq).toBe(perZone.get(event.zone_id));
    }
    expect([...perZone.keys()].sort()).toEqual(zones);
    expect(frames.some((f) => f.data?.includes('"decision":"deny"'))).toBe(true);

    // the API's rows in event_outbox, the Coordinator's (lifecycles) in caracal_outbox
    const { rows } = await db.pool.query<{ id: string; stream_name: string; payload_json: unknown }>(
      "SELECT id, stream_name, payload_json FROM event_outbox UNION ALL SELECT id, topic, payload_json FROM caracal_outbox",
    );
    expect(rows).toHaveLength(stats.outbox);
    const streams = new Set(rows.map((r) => r.stream_name));
    expect(streams).toEqual(
      new Set([Topics.sessionsRevoke, Topics.policyInvalidate, Topics.keysInvalidate, Topics.agentsLifecycle, Topics.invocationsLifecycle, Topics.delegationsInvalidate].map((t) => t.stream)),
    );
    const coordinator = await db.pool.query<{ topic: string }>("SELECT DISTINCT topic FROM caracal_outbox WHERE producer = 'coordinator'");
    expect(new Set(coordinator.rows.map((r) => r.topic))).toEqual(new Set([Topics.agentsLifecycle.stream, Topics.invocationsLifecycle.stream]));
    for (const r of rows) expect(outboxEntry(r.stream_name, r.payload_json, r.id)).toMatchObject({ ok: true });
  });

  it("plays each producer in order: lifecycles step forward per session, delegation epochs only rise, every revocation anchor is used", async () => {
    const { db } = await fixtures();
    const producers = new OutboxProducers();
    for (let i = 0; i < 6 * 24; i++) await producers.writeNext(db.pool, ["zone-1", "zone-2"]);
    const { rows } = await db.pool.query<{ stream_name: string; payload_json: Record<string, string> }>(
      "SELECT stream_name, payload_json, created_at, id FROM event_outbox UNION ALL SELECT topic, payload_json, created_at, id FROM caracal_outbox ORDER BY created_at, id",
    );
    const of = (topic: { stream: string }) => rows.filter((r) => r.stream_name === topic.stream).map((r) => r.payload_json);
    const lifecycle = new Map<string, string[]>();
    for (const e of of(Topics.agentsLifecycle)) lifecycle.set(e.agent_session_id!, [...(lifecycle.get(e.agent_session_id!) ?? []), e.event!]);
    for (const events of lifecycle.values()) expect(["spawn", "suspend", "resume", "terminate"].slice(0, events.length)).toEqual(events);
    expect([...lifecycle.values()].some((e) => e.length === 4)).toBe(true);
    for (const zone of ["zone-1", "zone-2"]) {
      const epochs = of(Topics.delegationsInvalidate).filter((e) => e.zone_id === zone).map((e) => Number(e.epoch));
      expect(epochs.length).toBeGreaterThan(1);
      expect(epochs).toEqual([...epochs].sort((a, b) => a - b));
    }
    const anchors = new Set(of(Topics.sessionsRevoke).flatMap((e) => ["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id"].filter((k) => e[k] !== undefined)));
    expect(anchors).toEqual(new Set(["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id"]));
    // policy changes are real activations of upstream's tables, alternating between two versions
    const bindings = await db.pool.query<{ zone_id: string; active_version_id: string }>("SELECT zone_id, active_version_id FROM policy_set_bindings ORDER BY zone_id");
    expect(bindings.rows.map((r) => r.zone_id)).toEqual(["zone-1", "zone-2"]);
    const activated = new Set(of(Topics.policyInvalidate).map((e) => e.policy_set_version_id));
    expect(activated).toEqual(new Set(["demo-zone-1-set-v1", "demo-zone-1-set-v2", "demo-zone-2-set-v1", "demo-zone-2-set-v2"]));
  });

  it("writes no outbox rows at rate 0, and counts rows it could not write", async () => {
    const { redis, db } = await fixtures();
    const publisher = new AuditPublisher({ redis: redis.client, keyPrefix: redis.keyPrefix, signing: { mode: "dev", signer: undefined }, auditKey });
    const none = await runTraffic({ audit: publisher, pool: db.pool, auditRate: 0, outboxRate: 0, zones: ["z"], tickMs: 20 }, AbortSignal.timeout(300));
    expect(none).toEqual({ audit: 0, outbox: 0, outboxErrors: 0 });
    await db.pool.query("DROP TABLE event_outbox; DROP TABLE caracal_outbox");
    const broken = await runTraffic({ audit: publisher, pool: db.pool, auditRate: 0, outboxRate: 20, zones: ["z"], tickMs: 20 }, AbortSignal.timeout(300));
    expect(broken.outbox).toBe(0);
    expect(broken.outboxErrors).toBeGreaterThan(0);
    await publisher.close();
  });

  // The built app as a process: `pnpm turbo run build --filter=@caracal/traffic-generator...` first.
  it.skipIf(!existsSync(mainJs))("runs as a process, serves /healthz and /readyz, and flushes on SIGTERM", async () => {
    const { redis, db } = await fixtures();
    const child = spawn(process.execPath, [mainJs], {
      env: {
        ...process.env,
        PORT: "0",
        DATABASE_URL: db.url,
        REDIS_URL: redis.url,
        CARACAL_KEY_PREFIX: redis.keyPrefix,
        AUDIT_HMAC_KEY: auditKey.toString("hex"),
        STREAMS_HMAC_KEY: randomBytes(32).toString("hex"),
        TRAFFIC_AUDIT_RATE: "100",
        TRAFFIC_OUTBOX_RATE: "5",
        LOG_LEVEL: "info",
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    cleanups.push(async () => child.kill("SIGKILL"));
    let output = "";
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const m = /"port":(\d+)[^\n]*traffic generator running/.exec(output);
        if (m) resolve(Number(m[1]));
      });
      child.once("exit", (code) => reject(new Error(`exited early with ${code}: ${output}`)));
    });
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(await ready.json()).toMatchObject({ status: "ready" });
    await new Promise((r) => setTimeout(r, 700));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const stopped = /"audit":(\d+),"outbox":(\d+)/.exec(output);
    expect(stopped).not.toBeNull();
    const audit = Number(stopped![1]);
    expect(audit).toBeGreaterThan(30);
    // Every event the generator handed over is in the stream after SIGTERM (the buffer was flushed).
    expect(await auditFrames(redis)).toHaveLength(audit);
    expect(output).not.toContain(auditKey.toString("hex"));
    // rows in both outboxes: the API's (event_outbox) and the Coordinator's lifecycles (caracal_outbox)
    const { rows } = await db.pool.query<{ n: string }>("SELECT ((SELECT count(*) FROM event_outbox) + (SELECT count(*) FROM caracal_outbox))::text AS n");
    expect(Number(rows[0]?.n)).toBe(Number(stopped![2]));
  });
});
