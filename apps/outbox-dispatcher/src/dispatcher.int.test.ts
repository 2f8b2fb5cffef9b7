import { randomUUID } from "node:crypto";

import { enqueue, requeue } from "@caracal/outbox";
import { Topics, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import type pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { RetentionSweeper } from "./retention.js";
import { OwnRedis, freePort, readStream, signer, silentLogger, startDispatcher, waitFor } from "./test-support/harness.js";
import type { RunningDispatcher } from "./test-support/harness.js";

const REVOKE = Topics.sessionsRevoke.stream;
const POLICY = Topics.policyInvalidate.stream;

async function inTx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, commit = true): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query(commit ? "COMMIT" : "ROLLBACK");
    return result;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

async function row(pool: pg.Pool, id: string) {
  const { rows } = await pool.query("SELECT * FROM event_outbox WHERE id = $1", [id]);
  return rows[0] as Record<string, unknown> | undefined;
}

describe.skipIf(!hasRedis() || !hasPostgres())("outbox dispatcher", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const running: RunningDispatcher[] = [];
  const start = (overrides = {}, url?: string) => {
    const d = startDispatcher(db.pool, url ?? redis.url, redis.keyPrefix, overrides);
    running.push(d);
    return d;
  };

  beforeEach(async () => {
    db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    redis = await createTestRedis("outbox");
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((d) => d.stop()));
    await redis.close();
    await db.drop();
  });

  it("publishes a committed row with a valid _sig, outbox_id and every field intact; a rolled-back row never", async () => {
    const tricky = { zone_id: "z=1\nline two", reason: "ünïcødé 🦊 = ok", session_id: "s-1", grant_id: "", agent_session_id: "a\r\n=\tb" };
    const id = await inTx(db.pool, (c) => enqueue(c, "sessionsRevoke", tricky));
    await inTx(db.pool, (c) => enqueue(c, "sessionsRevoke", { zone_id: "z", reason: "rolled-back", session_id: "s-2" }), false);
    start();
    const entries = await waitFor(async () => {
      const e = await readStream(redis.client, REVOKE, redis.keyPrefix);
      return e.length >= 1 && e;
    });
    const dispatched = await waitFor(async () => ((await row(db.pool, id))?.dispatched_at ? await row(db.pool, id) : undefined));
    expect(entries).toHaveLength(1);
    const fields = entries[0]!.fields;
    expect(fields).toEqual({ ...tricky, outbox_id: id, _sig: expect.stringMatching(/^[0-9a-f]{64}$/), _sig2: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(signer.verify(REVOKE, fields)).toBe("valid");
    expect(signer.verify(REVOKE, { ...fields, reason: "tampered" })).toBe("invalid");
    expect(dispatched.stream_entry_id).toBe(entries[0]!.id);
    // The rolled-back row never existed; nothing else is pending.
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM event_outbox");
    expect(rows[0].n).toBe(1);
  });

  it("wakes on NOTIFY well before the poll interval", async () => {
    const d = start({ pollMs: 60_000 });
    await waitFor(async () => d.dispatcher.state === "running");
    await new Promise((r) => setTimeout(r, 100));
    // The dispatcher is now waiting for up to a minute; only a wake can make it claim sooner.
    const { NotifyListener } = await import("./listener.js");
    const listener = new NotifyListener({ connectionString: db.url, channel: "caracal_outbox", onWake: () => d.dispatcher.wake(), logger: silentLogger });
    listener.start();
    try {
      await new Promise((r) => setTimeout(r, 300));
      const startedAt = Date.now();
      await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: "z" }));
      await waitFor(async () => (await readStream(redis.client, Topics.keysInvalidate.stream, redis.keyPrefix)).length === 1, 5_000);
      expect(Date.now() - startedAt).toBeLessThan(2_000);
    } finally {
      await listener.close();
    }
  });

  it("re-LISTENs after its connection is killed, and row ids with quotes and backslashes round-trip", async () => {
    const d = start({ pollMs: 60_000 });
    const { NotifyListener } = await import("./listener.js");
    const listener = new NotifyListener({ connectionString: db.url, channel: "caracal_outbox", onWake: () => d.dispatcher.wake(), logger: silentLogger });
    listener.start();
    try {
      await waitFor(async () => listener.listening);
      await new Promise((r) => setTimeout(r, 200));
      const killed = await db.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'outbox-dispatcher-listen'");
      expect(killed.rowCount).toBe(1);
      await waitFor(async () => !listener.listening, 5_000, "the loss to be seen");
      await waitFor(async () => listener.listening, 10_000, "the LISTEN to come back");
      await new Promise((r) => setTimeout(r, 200));
      const id = "it's a \\ 'quoted' id;--";
      await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: "z" }, { id }));
      const entries = await waitFor(async () => {
        const e = await readStream(redis.client, Topics.keysInvalidate.stream, redis.keyPrefix);
        return e.length === 1 && e;
      }, 5_000);
      expect(entries[0]?.fields.outbox_id).toBe(id);
      await waitFor(async () => (await row(db.pool, id))?.dispatched_at);
    } finally {
      await listener.close();
    }
  });

  it("keeps dispatching after the connection it holds for its exchanges is killed", async () => {
    start({ pollMs: 20 });
    const first = await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: "z", reason: "before" }));
    await waitFor(async () => (await row(db.pool, first))?.dispatched_at);
    const killed = await db.pool.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%outbox_exchange%'",
    );
    expect(killed.rowCount).toBe(1);
    const second = await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: "z", reason: "after" }));
    await waitFor(async () => (await row(db.pool, second))?.dispatched_at, 10_000, "the row enqueued after the kill to be dispatched");
    const entries = await readStream(redis.client, Topics.keysInvalidate.stream, redis.keyPrefix);
    expect(entries.map((e) => e.fields.outbox_id)).toEqual([first, second]);
  });

  it("never skips nor lets a later transaction overtake a row whose transaction commits later (Watermill 311)", async () => {
    const d = start({ pollMs: 20 });
    const slow = await db.pool.connect();
    try {
      await slow.query("BEGIN");
      // The slow transaction writes first: smaller tx_id and seq, committed last.
      const first = await enqueue(slow, "sessionsRevoke", { zone_id: "z", reason: "first", session_id: "s1" });
      const second = await inTx(db.pool, (c) => enqueue(c, "sessionsRevoke", { zone_id: "z", reason: "second", session_id: "s2" }));
      d.dispatcher.wake();
      await new Promise((r) => setTimeout(r, 400));
      // The second row is committed, but publishing it now would put it before `first` for good.
      expect(await readStream(redis.client, REVOKE, redis.keyPrefix)).toHaveLength(0);
      expect((await row(db.pool, second))?.dispatched_at).toBeNull();
      await slow.query("COMMIT");
      const entries = await waitFor(async () => {
        const e = await readStream(redis.client, REVOKE, redis.keyPrefix);
        return e.length === 2 && e;
      });
      expect(entries.map((e) => e.fields.outbox_id)).toEqual([first, second]);
    } finally {
      await slow.query("ROLLBACK").catch(() => undefined);
      slow.release();
    }
  });

  it("keeps commit order per stream under concurrent producers, and two dispatchers publish no duplicate", async () => {
    start({ batchSize: 7, pollMs: 10 });
    start({ batchSize: 5, pollMs: 10 });
    const perProducer = 40;
    const producers = 6;
    const committed: string[][] = [];
    await Promise.all(
      Array.from({ length: producers }, async (_, p) => {
        const mine: string[] = [];
        committed.push(mine);
        for (let i = 0; i < perProducer; i++) {
          const stream = i % 2 === 0 ? "sessionsRevoke" : "policyInvalidate";
          const id = await inTx(db.pool, async (c) =>
            stream === "sessionsRevoke"
              ? enqueue(c, "sessionsRevoke", { zone_id: `p${p}`, reason: String(i), session_id: `s${i}` })
              : enqueue(c, "policyInvalidate", { zone_id: `p${p}`, policy_set_id: String(i) }),
          );
          mine.push(id);
        }
      }),
    );
    const total = producers * perProducer;
    const entries = await waitFor(async () => {
      const a = await readStream(redis.client, REVOKE, redis.keyPrefix);
      const b = await readStream(redis.client, POLICY, redis.keyPrefix);
      return a.length + b.length >= total && [a, b];
    }, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    const [revoke, policy] = [await readStream(redis.client, REVOKE, redis.keyPrefix), await readStream(redis.client, POLICY, redis.keyPrefix)];
    expect(entries).toBeDefined();
    const ids = [...revoke, ...policy].map((e) => e.fields.outbox_id);
    expect(ids).toHaveLength(total);
    expect(new Set(ids).size).toBe(total);
    // Each producer committed its rows one after another: they must appear in that order on each stream.
    for (const stream of [revoke, policy]) {
      const position = new Map(stream.map((e, i) => [e.fields.outbox_id, i]));
      for (const mine of committed) {
        const seen = mine.filter((id) => position.has(id)).map((id) => position.get(id)!);
        expect(seen).toEqual([...seen].sort((x, y) => x - y));
      }
    }
    // And overall, each stream is in (tx_id, seq) order.
    const { rows } = await db.pool.query("SELECT id FROM event_outbox WHERE stream_name = $1 ORDER BY tx_id, seq", [REVOKE]);
    expect(revoke.map((e) => e.fields.outbox_id)).toEqual(rows.map((r) => r.id));
  });

  it("keeps rows pending while Redis is down and publishes them when it is back", async () => {
    const own = new OwnRedis(await freePort());
    await own.start();
    try {
      const d = start({ pollMs: 20, backoffBaseMs: 50, publishTimeoutMs: 500 }, own.url);
      await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: "before" }));
      await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NOT NULL")).rowCount === 1);
      await own.kill();
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) ids.push(await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: `during-${i}` })));
      await new Promise((r) => setTimeout(r, 1_500));
      const pending = await db.pool.query("SELECT attempts, failed_at FROM event_outbox WHERE dispatched_at IS NULL");
      expect(pending.rowCount).toBe(20);
      expect(pending.rows.every((r) => r.failed_at === null)).toBe(true);
      await own.start();
      await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NULL")).rowCount === 0, 30_000, "rows to drain");
      const { Redis } = await import("ioredis");
      const check = new Redis(own.url);
      try {
        const entries = await readStream(check, Topics.keysInvalidate.stream, redis.keyPrefix);
        expect(entries.map((e) => e.fields.outbox_id).slice(-20)).toEqual(ids);
        expect(entries.every((e) => signer.verify(Topics.keysInvalidate.stream, e.fields) === "valid")).toBe(true);
      } finally {
        check.disconnect();
      }
      await d.stop();
    } finally {
      await own.kill();
    }
  });

  it("fails a row after max attempts with its error, blocks nothing else, and requeue sends it", async () => {
    // An XADD to a key holding a string fails with WRONGTYPE: a per-entry, retryable failure.
    await redis.client.set(streamKey(Topics.agentsLifecycle.stream, redis.keyPrefix), "not a stream");
    const id = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "spawn", zone_id: "z", agent_session_id: "a1" }));
    start({ maxAttempts: 3, backoffBaseMs: 5, pollMs: 10 });
    const failed = await waitFor(async () => {
      const r = await row(db.pool, id);
      return r?.failed_at ? r : undefined;
    });
    expect(failed.attempts).toBe(3);
    expect(failed.dispatched_at).toBeNull();
    expect(String(failed.last_error)).toMatch(/WRONGTYPE/);
    // A later row of the same stream is not held back by a failed one.
    await redis.client.del(streamKey(Topics.agentsLifecycle.stream, redis.keyPrefix));
    const later = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "terminate", zone_id: "z", agent_session_id: "a1" }));
    await waitFor(async () => (await row(db.pool, later))?.dispatched_at);
    expect((await row(db.pool, id))?.dispatched_at).toBeNull();
    expect(await requeue(db.pool, { ids: [id] })).toBe(1);
    await waitFor(async () => (await row(db.pool, id))?.dispatched_at);
    const entries = await readStream(redis.client, Topics.agentsLifecycle.stream, redis.keyPrefix);
    expect(entries.map((e) => e.fields.outbox_id)).toEqual([later, id]);
    expect((await row(db.pool, id))?.failed_at).toBeNull();
  });

  it("holds later rows of a stream while an earlier one backs off, so the stream keeps its order", async () => {
    const key = streamKey(Topics.agentsLifecycle.stream, redis.keyPrefix);
    await redis.client.set(key, "not a stream");
    const a = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "spawn", zone_id: "z", agent_session_id: "a" }));
    start({ maxAttempts: 1000, backoffBaseMs: 200, pollMs: 10, batchSize: 1 });
    await waitFor(async () => Number((await row(db.pool, a))?.attempts) >= 1);
    const b = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "suspend", zone_id: "z", agent_session_id: "a" }));
    const other = await inTx(db.pool, (c) => enqueue(c, "keysInvalidate", { zone_id: "z" }));
    // Another stream is not held back.
    await waitFor(async () => (await row(db.pool, other))?.dispatched_at);
    expect((await row(db.pool, b))?.dispatched_at).toBeNull();
    expect(Number((await row(db.pool, b))?.attempts)).toBe(0);
    await redis.client.del(key);
    await waitFor(async () => (await row(db.pool, b))?.dispatched_at, 15_000);
    const entries = await readStream(redis.client, Topics.agentsLifecycle.stream, redis.keyPrefix);
    expect(entries.map((e) => e.fields.outbox_id)).toEqual([a, b]);
  });

  it("reads past a long run of blocked rows to other streams' rows, and holds the rows behind the blocked ones", async () => {
    const lifecycle = Topics.agentsLifecycle.stream;
    const keys = Topics.keysInvalidate.stream;
    // 300 rows backing off and 50 leased by another replica, far more than the first prefix the claim
    // reads (2 x batch): it has to widen its read several times to reach the rows behind them.
    await db.pool.query(
      `INSERT INTO event_outbox (id, stream_name, payload_json, attempts, available_at)
       SELECT 'backoff-' || lpad(g::text, 3, '0'), $1, '{"event":"spawn","zone_id":"z","agent_session_id":"a"}', 1, now() + interval '1 hour'
       FROM generate_series(1, 300) g`,
      [lifecycle],
    );
    await db.pool.query(
      `INSERT INTO event_outbox (id, stream_name, payload_json, locked_until, locked_by)
       SELECT 'leased-' || lpad(g::text, 3, '0'), $1, '{"zone_id":"z","policy_set_id":"p","shadow_version_id":""}', now() + interval '1 hour', 'other-replica'
       FROM generate_series(1, 50) g`,
      [POLICY],
    );
    const heldLifecycle = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "suspend", zone_id: "z", agent_session_id: "a" }));
    const heldPolicy = await inTx(db.pool, (c) => enqueue(c, "policyInvalidate", { zone_id: "z", policy_set_id: "p", shadow_version_id: "" }));
    const free = await inTx(db.pool, async (c) => [
      await enqueue(c, "keysInvalidate", { zone_id: "z1" }),
      await enqueue(c, "keysInvalidate", { zone_id: "z2" }),
    ]);
    start({ batchSize: 4, pollMs: 10 });
    await waitFor(async () => (await readStream(redis.client, keys, redis.keyPrefix)).length === 2);
    // A few more passes: the held rows must stay where they are.
    await new Promise((r) => setTimeout(r, 200));
    expect((await readStream(redis.client, keys, redis.keyPrefix)).map((e) => e.fields.outbox_id)).toEqual(free);
    for (const id of [heldLifecycle, heldPolicy]) {
      expect((await row(db.pool, id))?.dispatched_at).toBeNull();
      expect(Number((await row(db.pool, id))?.attempts)).toBe(0);
    }
    expect(await readStream(redis.client, lifecycle, redis.keyPrefix)).toEqual([]);
    expect(await readStream(redis.client, POLICY, redis.keyPrefix)).toEqual([]);
  });

  it("releases unsent the next rows of a stream whose previous batch failed (they never overtake)", async () => {
    const key = streamKey(Topics.agentsLifecycle.stream, redis.keyPrefix);
    await redis.client.set(key, "not a stream");
    const a = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "spawn", zone_id: "z", agent_session_id: "a" }));
    const b = await inTx(db.pool, (c) => enqueue(c, "agentsLifecycle", { event: "suspend", zone_id: "z", agent_session_id: "a" }));
    // Batches of one: `b` is claimed while `a` is being published, then `a` fails.
    start({ maxAttempts: 1000, backoffBaseMs: 100, pollMs: 10, batchSize: 1 });
    await waitFor(async () => Number((await row(db.pool, a))?.attempts) >= 3, 15_000);
    // `b` was never sent: an XADD would have failed too and counted an attempt.
    expect(Number((await row(db.pool, b))?.attempts)).toBe(0);
    await redis.client.del(key);
    await waitFor(async () => (await row(db.pool, b))?.dispatched_at, 15_000);
    const entries = await readStream(redis.client, Topics.agentsLifecycle.stream, redis.keyPrefix);
    expect(entries.map((e) => e.fields.outbox_id)).toEqual([a, b]);
  });

  it("fails at once, with its reason, a row whose payload does not fit its topic or stream", async () => {
    const bad = [
      { id: randomUUID(), stream: REVOKE, payload: { zone_id: "z", reason: "no anchor" }, reason: /schema_invalid: .*revocation anchor/ },
      { id: randomUUID(), stream: "caracal.nope", payload: { a: "b" }, reason: /unknown_stream/ },
      { id: randomUUID(), stream: REVOKE, payload: ["not", "an", "object"], reason: /payload_invalid/ },
    ];
    for (const b of bad) {
      await db.pool.query("INSERT INTO event_outbox (id, stream_name, payload_json) VALUES ($1, $2, $3::jsonb)", [b.id, b.stream, JSON.stringify(b.payload)]);
    }
    // Upstream payloads may hold numbers, booleans, objects and nulls: flattened per WIRE §2.
    const good = randomUUID();
    await db.pool.query("INSERT INTO event_outbox (id, stream_name, payload_json) VALUES ($1, $2, $3::jsonb)", [
      good,
      Topics.delegationsInvalidate.stream,
      JSON.stringify({ event: "edge_revoke", zone_id: "z", epoch: 42, edge_ids: ["e1", "e2"], affected_edges: null, extra: true }),
    ]);
    const d = start();
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE failed_at IS NULL AND dispatched_at IS NULL")).rowCount === 0);
    for (const b of bad) {
      const r = await row(db.pool, b.id);
      expect(r?.failed_at).not.toBeNull();
      expect(r?.attempts).toBe(1);
      expect(String(r?.last_error)).toMatch(b.reason);
    }
    const entries = await readStream(redis.client, Topics.delegationsInvalidate.stream, redis.keyPrefix);
    expect(entries[0]?.fields).toEqual({
      event: "edge_revoke",
      zone_id: "z",
      epoch: "42",
      edge_ids: '["e1","e2"]',
      extra: "true",
      outbox_id: good,
      _sig: expect.any(String),
      _sig2: expect.any(String),
    });
    const metrics = await d.metrics.registry.metrics();
    expect(metrics).toMatch(/caracal_outbox_failures_total\{reason="schema_invalid"\} 1/);
    expect(metrics).toMatch(/caracal_outbox_failed_rows 3/);
    expect(metrics).toMatch(/caracal_outbox_pending_rows 0/);
    expect(metrics).toMatch(/caracal_outbox_dispatched_total\{stream="caracal.delegations.invalidate"\} 1/);
  });

  it("deletes dispatched rows past the retention in small batches, and never pending or failed ones", async () => {
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json, dispatched_at)
      SELECT 'old-' || g, $1, '{}'::jsonb, now() - interval '8 days' FROM generate_series(1, 25) g`, [REVOKE]);
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json, dispatched_at)
      VALUES ('recent', $1, '{}'::jsonb, now() - interval '1 day')`, [REVOKE]);
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json, failed_at, created_at)
      VALUES ('failed', $1, '{}'::jsonb, now() - interval '30 days', now() - interval '30 days')`, [REVOKE]);
    const sweeper = new RetentionSweeper({ pool: db.pool, retentionMs: 7 * 86_400_000, intervalMs: 60_000, batchSize: 10, logger: silentLogger });
    expect(await sweeper.sweep()).toBe(25);
    await sweeper.stop();
    const { rows } = await db.pool.query("SELECT id FROM event_outbox ORDER BY id");
    expect(rows.map((r) => r.id)).toEqual(["failed", "recent"]);
  });
});
