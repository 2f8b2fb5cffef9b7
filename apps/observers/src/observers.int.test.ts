import { StreamPublisher, Topics, signaturePolicy, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { Hono } from "hono";
import pg from "pg";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { Observers } from "./app.js";
import { startObservers } from "./app.js";
import { loadConfig } from "./config.js";

const KEY = "c3".repeat(32);
const silent = pino({ level: "silent" });

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(!hasPostgres() || !hasRedis())("observers (real Redis and PostgreSQL)", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const controllers: AbortController[] = [];
  const apps: Observers[] = [];
  const pools: pg.Pool[] = [];

  beforeEach(async () => {
    db = await createMigratedDatabase();
    redis = await createTestRedis("observers");
  });
  afterEach(async () => {
    for (const c of controllers.splice(0)) c.abort();
    await Promise.all(apps.splice(0).map((a) => a.done));
    await Promise.all(pools.splice(0).map((p) => p.end()));
    await redis.close();
    await db.drop();
  });

  async function start(consumer: string) {
    const config = loadConfig({
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      STREAMS_HMAC_KEY: KEY,
      CARACAL_MODE: "stable",
      CARACAL_KEY_PREFIX: redis.keyPrefix,
      HOSTNAME: consumer,
      OBSERVERS_DEAD_LETTER_INTERVAL_MS: "200",
      PORT: "0",
    });
    const controller = new AbortController();
    controllers.push(controller);
    const pool = new pg.Pool({ connectionString: db.url, max: 4 });
    pools.push(pool);
    const http = new Hono();
    const registry = new Registry();
    const app = await startObservers(
      { config, logger: silent, redis: redis.connect(), pool, registry, signal: controller.signal, http, ready: () => undefined, onStop: () => undefined },
      { blockMs: 100 },
    );
    apps.push(app);
    return { app, http, registry };
  }

  const publisher = () => new StreamPublisher({ redis: redis.client, keyPrefix: redis.keyPrefix, signing: signaturePolicy({ mode: "stable", keyHex: KEY }) });
  const lifecycle = Topics.agentsLifecycle.stream;

  it("orders agent sessions by occurred_at: a late event never moves a session back, terminate is final, duplicates dropped", async () => {
    const { http, registry } = await start("obs-0");
    const p = publisher();
    const ev = (event: string, at: string, extra: Record<string, string> = {}) => ({ event, zone_id: "z1", agent_session_id: "s1", occurred_at: at, ...extra });
    await p.publish(lifecycle, ev("spawn", "2026-01-01T00:00:00Z"));
    await p.publish(lifecycle, ev("suspend", "2026-01-01T00:00:02.123456789+00:00", { outbox_id: "o-2" }));
    // late: older than the suspend
    await p.publish(lifecycle, ev("resume", "2026-01-01T00:00:01Z"));
    // duplicate of the suspend (same outbox_id, another entry)
    await p.publish(lifecycle, ev("suspend", "2026-01-01T00:00:02Z", { outbox_id: "o-2" }));
    const get = async () => {
      const r = await http.request("/v1/zones/z1/agent-sessions/s1");
      return r.status === 200 ? ((await r.json()) as { status: string; history: { event: string }[] }) : undefined;
    };
    const s = await waitFor("three history rows", async () => {
      const v = await get();
      return v !== undefined && v.history.length === 3 ? v : undefined;
    });
    expect(s.status).toBe("suspend");
    expect(s.history.map((h) => h.event)).toEqual(["spawn", "resume", "suspend"]);
    await p.publish(lifecycle, ev("terminate", "2026-01-01T00:00:03Z"));
    await p.publish(lifecycle, ev("resume", "2026-01-01T00:00:09Z"));
    const t = await waitFor("five history rows", async () => {
      const v = await get();
      return v !== undefined && v.history.length === 5 ? v : undefined;
    });
    expect(t.status).toBe("terminate");
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/caracal_observer_duplicates_total\{stream="caracal.agents.lifecycle"\} 1/);
    expect(metrics).toMatch(/caracal_observer_events_total\{stream="caracal.agents.lifecycle",zone="z1",event="spawn"\} 1/);

    const recent = (await (await http.request(`/v1/events?stream=${lifecycle}&zone=z1&limit=2`)).json()) as { events: { event: string }[] };
    expect(recent.events.map((e) => e.event)).toEqual(["resume", "terminate"]);
  });

  it("two replicas share invocations and delegation epochs; the epoch never goes back", async () => {
    const a = await start("obs-a");
    const b = await start("obs-b");
    const p = publisher();
    const inv = Topics.invocationsLifecycle.stream;
    const del = Topics.delegationsInvalidate.stream;
    for (let i = 0; i < 20; i++) {
      await p.publish(inv, { event: "invocation.created", zone_id: "z", invocation_id: `i${i}`, service_id: "svc", occurred_at: "2026-01-01T00:00:00Z" });
      if (i % 2 === 0) await p.publish(inv, { event: "invocation.completed", zone_id: "z", invocation_id: `i${i}`, occurred_at: "2026-01-01T00:00:01.5Z" });
    }
    for (const epoch of ["3", "7", "5"]) await p.publish(del, { event: "edge_revoke", zone_id: "z", epoch });
    const running = await waitFor("10 running, 10 done", async () => {
      const all = (await (await b.http.request("/v1/zones/z/invocations?limit=100")).json()) as { invocations: { state: string; duration_ms: number | null }[] };
      return all.invocations.length === 20 && all.invocations.filter((x) => x.state === "completed").length === 10 ? all : undefined;
    });
    expect(running.invocations.filter((x) => x.state === "completed").every((x) => x.duration_ms === 1500)).toBe(true);
    const r = (await (await a.http.request("/v1/zones/z/invocations?state=running")).json()) as { invocations: unknown[]; running_by_service: unknown[] };
    expect(r.invocations).toHaveLength(10);
    expect(r.running_by_service).toEqual([{ service_id: "svc", running: 10 }]);
    const epoch = await waitFor("epoch 7", async () => {
      const res = await a.http.request("/v1/zones/z/delegation-epoch");
      const body = res.status === 200 ? ((await res.json()) as { epoch: number }) : undefined;
      return body?.epoch === 7 ? body : undefined;
    });
    expect(epoch.epoch).toBe(7);
    // both replicas read: with groups, each entry went to one of them, and the state is in PostgreSQL
    const rows = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM observed_events WHERE stream = $1", [inv]);
    expect(rows.rows[0]!.n).toBe(30);
  });

  it("dead letters: unsigned entries are dead-lettered, measured and listed in the WIRE §4 format (old src_ fields read too)", async () => {
    const { http, registry } = await start("obs-0");
    await redis.client.xadd(streamKey(lifecycle, redis.keyPrefix), "*", "event", "spawn", "zone_id", "z", "agent_session_id", "s");
    const dead = Topics.agentsLifecycle.deadLetterStream!;
    await waitFor("dead letter", async () => (await redis.client.xlen(streamKey(dead, redis.keyPrefix))) === 1);
    await redis.client.xadd(streamKey(dead, redis.keyPrefix), "*", "reason", "parse_error", "src_stream", lifecycle, "src_id", "1-1", "group", "g", "consumer", "c", "deliveries", "1", "error", "x", "received_at", "2026-01-01T00:00:00Z", "src_zone_id", "old");
    const list = (await (await http.request(`/v1/dead-letters?stream=${dead}`)).json()) as { dead_letters: { reason: string; src: Record<string, string> }[] };
    expect(list.dead_letters).toHaveLength(2);
    expect(list.dead_letters[0]!.src).toEqual({ zone_id: "old" });
    expect(list.dead_letters[1]!.reason).toBe("signature_missing");
    expect(list.dead_letters[1]!.src.agent_session_id).toBe("s");
    await waitFor("metrics", async () => {
      const m = await registry.metrics();
      return m.includes(`caracal_observer_dead_letter_entries{stream="${dead}"} 2`) && m.includes(`caracal_observer_dead_letter_reasons_total{stream="${dead}",reason="parse_error"} 1`);
    });
    expect((await http.request("/v1/dead-letters?stream=nope")).status).toBe(400);
  });
});
