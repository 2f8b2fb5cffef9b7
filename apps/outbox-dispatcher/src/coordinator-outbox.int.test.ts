/**
 * Upstream's second outbox, `caracal_outbox` (its Coordinator's), drained beside `event_outbox`: rows
 * written as upstream's Coordinator writes them, an upstream database where the table already holds rows,
 * order per topic, backoff on a Redis error, dead rows and requeue.
 */
import { migrateDatabase } from "@caracal/db";
import { enqueue, requeueCoordinatorOutbox } from "@caracal/outbox";
import { StreamPublisher, Topics, connectRedis, closeClient, streamKey } from "@caracal/streams-core";
import { createEmptyDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { CoordinatorOutboxDrain } from "./coordinator-outbox.js";
import { createMetrics } from "./metrics.js";
import { readStream, signer, silentLogger, startDispatcher, waitFor } from "./test-support/harness.js";
import type { RunningDispatcher } from "./test-support/harness.js";

/** caracal_outbox as upstream's baseline migration creates it (no last_error). */
const UPSTREAM_DDL = `CREATE TABLE caracal_outbox (
  id text PRIMARY KEY,
  producer text NOT NULL CHECK (producer = ANY (ARRAY['api', 'coordinator'])),
  topic text NOT NULL,
  dedupe_key text NOT NULL,
  payload_json jsonb NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status = ANY (ARRAY['pending', 'published', 'dead'])),
  attempts integer NOT NULL DEFAULT 0,
  available_at timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (producer, topic, dedupe_key)
);
CREATE INDEX caracal_outbox_status_available_at_idx ON caracal_outbox (status, available_at);
CREATE INDEX caracal_outbox_topic_status_idx ON caracal_outbox (topic, status)`;

const LIFECYCLE = Topics.agentsLifecycle.stream;
const REVOKE = Topics.sessionsRevoke.stream;

describe.skipIf(!hasRedis() || !hasPostgres())("caracal_outbox drain", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const stops: Array<() => Promise<unknown>> = [];

  beforeEach(async () => {
    db = await createEmptyDatabase();
    db.pool.on("error", () => undefined);
    redis = await createTestRedis("coord");
  });
  afterEach(async () => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => undefined);
    await redis.close();
    await db.drop();
  });

  /** Inserts rows as upstream's Coordinator does (uuidv7-like ids ordered by created_at). */
  async function coordinatorRows(rows: Array<{ id: string; topic: string; dedupe: string; payload: unknown; status?: string; minutesAgo: number }>) {
    for (const r of rows) {
      await db.pool.query(
        `INSERT INTO caracal_outbox (id, producer, topic, dedupe_key, payload_json, status, created_at)
         VALUES ($1, 'coordinator', $2, $3, $4::jsonb, $5, now() - $6 * interval '1 minute')
         ON CONFLICT (producer, topic, dedupe_key) DO NOTHING`,
        [r.id, r.topic, r.dedupe, JSON.stringify(r.payload), r.status ?? "pending", r.minutesAgo],
      );
    }
  }

  async function drain(overrides: { maxAttempts?: number; backoffBaseMs?: number } = {}) {
    const client = connectRedis(redis.url, { connectionName: "coord-test" });
    client.on("error", () => undefined);
    stops.push(() => closeClient(client));
    await client.ping(); // connected: the drain claims nothing while its Redis is not ready
    const publisher = new StreamPublisher({ redis: client, signing: { mode: "stable", signer }, keyPrefix: redis.keyPrefix, maxLenFor: () => 100_000 });
    const registry = new Registry();
    return {
      registry,
      client,
      drain: new CoordinatorOutboxDrain({
        pool: db.pool, publisher, redis: client, metrics: createMetrics(db.pool, { registry }), registry, logger: silentLogger,
        batchSize: 50, pollMs: 50, maxAttempts: overrides.maxAttempts ?? 5, publishTimeoutMs: 2000, backoffBaseMs: overrides.backoffBaseMs ?? 60_000,
      }),
    };
  }

  it("adopts an upstream table with its rows and publishes pending rows in order, with dedupe_key and a verifiable signature", async () => {
    await db.pool.query(UPSTREAM_DDL);
    await coordinatorRows([
      { id: "01-old", topic: LIFECYCLE, dedupe: "spawn:as-0", payload: { event: "spawn", zone_id: "z", agent_session_id: "as-0" }, status: "published", minutesAgo: 60 },
      { id: "02", topic: LIFECYCLE, dedupe: "spawn:as-1", payload: { event: "spawn", zone_id: "z", agent_session_id: "as-1", labels: { team: "a" } }, minutesAgo: 30 },
      { id: "03", topic: REVOKE, dedupe: "revoke:s-1", payload: { zone_id: "z", reason: "operator", session_id: "s-1" }, minutesAgo: 20 },
      { id: "04", topic: LIFECYCLE, dedupe: "terminate:as-1", payload: { event: "terminate", zone_id: "z", agent_session_id: "as-1" }, minutesAgo: 10 },
    ]);
    const before = (await db.pool.query("SELECT id, status, payload_json FROM caracal_outbox ORDER BY id")).rows;
    await migrateDatabase(db.url);
    await migrateDatabase(db.url);
    expect((await db.pool.query("SELECT id, status, payload_json FROM caracal_outbox ORDER BY id")).rows).toEqual(before);

    const { drain: d, registry } = await drain();
    expect(await d.drainOnce()).toBe(3);
    const lifecycle = await readStream(redis.client, LIFECYCLE, redis.keyPrefix);
    expect(lifecycle.map((e) => [e.fields.outbox_id, e.fields.dedupe_key, e.fields.event])).toEqual([
      ["02", "spawn:as-1", "spawn"],
      ["04", "terminate:as-1", "terminate"],
    ]);
    expect(lifecycle[0]?.fields.labels).toBe('{"team":"a"}');
    for (const e of lifecycle) expect(signer.verify(LIFECYCLE, e.fields)).toBe("valid");
    expect((await readStream(redis.client, REVOKE, redis.keyPrefix)).map((e) => e.fields.session_id)).toEqual(["s-1"]);
    const rows = await db.pool.query("SELECT id, status, attempts, published_at IS NOT NULL AS at FROM caracal_outbox ORDER BY id");
    expect(rows.rows.map((r) => [r.id, r.status])).toEqual([["01-old", "published"], ["02", "published"], ["03", "published"], ["04", "published"]]);
    expect(await d.drainOnce()).toBe(0);
    expect(await registry.metrics()).toMatch(/caracal_outbox_coordinator_dispatched_total\{stream="caracal.agents.lifecycle"\} 2/);
  });

  it("backs off on a Redis error holding back its topic only, fails a row for good after the attempts, and requeues it", async () => {
    await migrateDatabase(db.url);
    await coordinatorRows([
      { id: "a1", topic: LIFECYCLE, dedupe: "a1", payload: { event: "spawn", zone_id: "z", agent_session_id: "as-1" }, minutesAgo: 5 },
      { id: "b1", topic: REVOKE, dedupe: "b1", payload: { zone_id: "z", reason: "r", session_id: "s-1" }, minutesAgo: 4 },
      { id: "a2", topic: LIFECYCLE, dedupe: "a2", payload: { event: "suspend", zone_id: "z", agent_session_id: "as-1" }, minutesAgo: 3 },
      { id: "bad", topic: REVOKE, dedupe: "bad", payload: { zone_id: "z", reason: "no anchor" }, minutesAgo: 2 },
    ]);
    // the lifecycle stream's key holds a string: every XADD to it fails (WRONGTYPE), a real Redis error
    await redis.client.set(streamKey(LIFECYCLE, redis.keyPrefix), "not a stream");
    const { drain: d } = await drain({ maxAttempts: 2, backoffBaseMs: 60_000 });
    await d.drainOnce();
    let rows = (await db.pool.query("SELECT id, status, attempts, available_at > now() AS later, last_error FROM caracal_outbox ORDER BY id")).rows;
    const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
    expect(byId.a1).toMatchObject({ status: "pending", attempts: 1, later: true });
    expect(byId.a1.last_error).toMatch(/WRONGTYPE/);
    expect(byId.a2).toMatchObject({ status: "pending", attempts: 0 }); // held back behind a1, untouched
    expect(byId.b1).toMatchObject({ status: "published" }); // another topic goes on
    expect(byId.bad).toMatchObject({ status: "dead" });
    expect(byId.bad.last_error).toMatch(/schema_invalid/);
    // a2 stays behind a1 while a1 waits for its retry
    expect(await d.drainOnce()).toBe(0);
    // a1's retry is due and fails again: attempts exhausted, dead; a2 then goes once Redis is fixed
    await db.pool.query("UPDATE caracal_outbox SET available_at = now() WHERE id = 'a1'");
    await d.drainOnce();
    expect((await db.pool.query("SELECT status FROM caracal_outbox WHERE id = 'a1'")).rows[0].status).toBe("dead");
    await redis.client.del(streamKey(LIFECYCLE, redis.keyPrefix));
    await d.drainOnce();
    // requeued, a1 is published after a2 (it had failed for good before a2 left)
    expect(await requeueCoordinatorOutbox(db.pool, { ids: ["a1"] })).toBe(1);
    await d.drainOnce();
    rows = (await db.pool.query("SELECT id, status FROM caracal_outbox WHERE topic = $1 ORDER BY id", [LIFECYCLE])).rows;
    expect(rows.map((r) => r.status)).toEqual(["published", "published"]);
    expect((await readStream(redis.client, LIFECYCLE, redis.keyPrefix)).map((e) => e.fields.outbox_id)).toEqual(["a2", "a1"]);
  });

  it("drains both outboxes at once, the coordinator's by polling (upstream producers do not NOTIFY)", async () => {
    await migrateDatabase(db.url);
    const running: RunningDispatcher = startDispatcher(db.pool, redis.url, redis.keyPrefix);
    stops.push(() => running.stop());
    const { drain: d } = await drain();
    const controller = new AbortController();
    const done = d.run(controller.signal);
    stops.push(async () => {
      controller.abort();
      await done;
    });
    const client = await db.pool.connect();
    try {
      await client.query("BEGIN");
      await enqueue(client, "sessionsRevoke", { zone_id: "z", reason: "api", session_id: "from-event-outbox" });
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    await coordinatorRows([{ id: "c1", topic: REVOKE, dedupe: "c1", payload: { zone_id: "z", reason: "coordinator", session_id: "from-caracal-outbox" }, minutesAgo: 0 }]);
    const entries = await waitFor(async () => {
      const e = await readStream(redis.client, REVOKE, redis.keyPrefix);
      return e.length >= 2 ? e : undefined;
    });
    expect(new Set(entries.map((e) => e.fields.session_id))).toEqual(new Set(["from-event-outbox", "from-caracal-outbox"]));
  });
});
