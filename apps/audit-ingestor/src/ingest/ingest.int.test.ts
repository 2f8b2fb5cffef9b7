import { signAuditData } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis, startTcpProxy, withDatabase } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { AuditIngestor } from "../app.js";
import { startAuditIngestor } from "../app.js";
import { makeEvent, makeFrame, TEST_AUDIT_KEY } from "../test-support/events.js";
import { deadLetters, pendingCount, silentLogger, testConfig, testPublisher, waitFor, xaddRaw, AUDIT_STREAM } from "../test-support/harness.js";

import { verifyZone } from "../verify/ledger-verify.js";

describe.skipIf(!hasPostgres() || !hasRedis())("audit ingest (real Redis and PostgreSQL)", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const controllers: AbortController[] = [];
  const apps: AuditIngestor[] = [];

  beforeEach(async () => {
    db = await createMigratedDatabase();
    redis = await createTestRedis("audit");
  });
  afterEach(async () => {
    for (const c of controllers.splice(0)) c.abort();
    await Promise.all(apps.splice(0).map((a) => a.done));
    await redis.close();
    await db.drop();
  });

  async function start(consumer = "audit-test-0", databaseUrl = db.url, extra: Record<string, string> = {}) {
    const controller = new AbortController();
    controllers.push(controller);
    const app = await startAuditIngestor(testConfig({ databaseUrl, redisUrl: redis.url, keyPrefix: redis.keyPrefix, consumer, extra }), {
      logger: silentLogger,
      signal: controller.signal,
      blockMs: 200,
    });
    apps.push(app);
    return { app, stop: () => controller.abort() };
  }

  const count = async (sql = "SELECT count(*)::int AS n FROM audit_events", params: unknown[] = []) =>
    (await db.pool.query<{ n: number }>(sql, params)).rows[0]!.n;

  it.each(["0", "1"])("follows the processing sequence: verify, parse, store with chain, ack; bad entries dead-lettered and acked (AUDIT_VERIFY_WORKERS=%s)", async (verifyWorkers) => {
    const publisher = testPublisher(redis.client, redis.keyPrefix);
    const good = makeEvent({ zone_id: "z" });
    const upstream = makeEvent({ zone_id: "z" });
    const outbox = makeEvent({ zone_id: "z" });
    // signed frame (with _sig), upstream frame {id,data,sig} (no _sig), outbox frame {outbox_id,id,data,sig,_sig}
    await publisher.publish(AUDIT_STREAM, makeFrame(good));
    await xaddRaw(redis.client, redis.keyPrefix, makeFrame(upstream));
    await publisher.publish(AUDIT_STREAM, { outbox_id: "ob-1", ...makeFrame(outbox) });
    // forged sig, wrong _sig, garbled data, schema-invalid event, missing sig
    const forged = makeFrame(makeEvent({ zone_id: "z" }));
    forged.sig = signAuditData(Buffer.alloc(32, 9), forged.data!);
    await publisher.publish(AUDIT_STREAM, forged);
    await xaddRaw(redis.client, redis.keyPrefix, { ...makeFrame(makeEvent({ zone_id: "z" })), _sig: "00".repeat(32) });
    // a producer-chosen src_id field must not become the dead letter's src_id (WIRE §4)
    const garbledEntryId = await publisher.publish(AUDIT_STREAM, { id: "garbled", src_id: "chosen-by-producer", data: "{not json", sig: signAuditData(TEST_AUDIT_KEY, "{not json") });
    // a decision beyond allow/deny (upstream's step-up events send "pending"): stored as sent, counted (WIRE §6)
    const invalid = { ...makeEvent({ zone_id: "z" }), decision: "maybe" };
    await publisher.publish(AUDIT_STREAM, { id: invalid.id, data: JSON.stringify(invalid), sig: signAuditData(TEST_AUDIT_KEY, JSON.stringify(invalid)) });
    const { sig: _s, ...unsigned } = makeFrame(makeEvent({ zone_id: "z" }));
    await publisher.publish(AUDIT_STREAM, unsigned);
    // a good event after the bad ones: the group is never blocked
    const last = makeEvent({ zone_id: "z" });
    await publisher.publish(AUDIT_STREAM, makeFrame(last));

    await start(undefined, undefined, { AUDIT_VERIFY_WORKERS: verifyWorkers });
    await waitFor("5 rows and 4 dead letters", async () => (await count()) === 5 && (await deadLetters(redis.client, redis.keyPrefix)).length === 4);
    const rows = await db.pool.query<{ id: string; chain_seq: string; tamper_detected: boolean; stream_entry_id: string }>(
      "SELECT id, chain_seq, tamper_detected, stream_entry_id FROM audit_events ORDER BY chain_seq",
    );
    expect(rows.rows.map((r) => [r.id, Number(r.chain_seq)])).toEqual([
      [good.id, 1],
      [upstream.id, 2],
      [outbox.id, 3],
      [invalid.id, 4],
      [last.id, 5],
    ]);
    const reasons = (await deadLetters(redis.client, redis.keyPrefix)).map((d) => d.reason).sort();
    expect(reasons).toEqual(["parse_error", "signature_invalid", "signature_invalid", "signature_missing"]);
    const letters = await deadLetters(redis.client, redis.keyPrefix);
    const garbled = letters.find((l) => l.reason === "parse_error")!;
    expect(garbled.src_id).toBe(garbledEntryId);
    expect(garbled["src.id"]).toBe("garbled");
    expect(garbled["src.src_id"]).toBe("chosen-by-producer");
    for (const l of letters) {
      expect(l.src_id).toMatch(/^\d+-\d+$/);
      expect(l.src_stream).toBe(AUDIT_STREAM);
      expect(l.group).toBe("audit-ingestor");
      expect(l._sig).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(await waitFor("no pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0)).toBe(true);
    const intact = await verifyZone("z", {}, { pool: db.pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 });
    expect(intact.breaks).toEqual([]);
  });

  it("a redelivered event is a no-op; the same id with other content is dead-lettered as tamper_on_replay", async () => {
    const e = makeEvent({ zone_id: "z" });
    await xaddRaw(redis.client, redis.keyPrefix, makeFrame(e));
    await xaddRaw(redis.client, redis.keyPrefix, makeFrame(e));
    await xaddRaw(redis.client, redis.keyPrefix, makeFrame({ ...e, decision: "deny" }));
    await start();
    await waitFor("tamper dead letter", async () => (await deadLetters(redis.client, redis.keyPrefix)).length === 1);
    expect((await deadLetters(redis.client, redis.keyPrefix))[0]!.reason).toBe("tamper_on_replay");
    expect(await count()).toBe(1);
    expect(await count("SELECT count(*)::int AS n FROM audit_tamper_alerts WHERE kind = 'tamper_on_replay'")).toBe(1);
    await waitFor("no pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0);
  });

  it("two replicas on one stream store each event exactly once with one gap-free chain per zone", async () => {
    const publisher = testPublisher(redis.client, redis.keyPrefix);
    const zones = ["a", "b", "c"];
    const events = Array.from({ length: 900 }, (_, i) => makeEvent({ zone_id: zones[i % 3]! }));
    await start("replica-1", db.url, { AUDIT_BATCH_SIZE: "20" });
    await start("replica-2", db.url, { AUDIT_BATCH_SIZE: "20" });
    for (let i = 0; i < events.length; i += 100) {
      await publisher.publishBatch(events.slice(i, i + 100).map((e) => ({ stream: AUDIT_STREAM, fields: makeFrame(e) })));
    }
    await waitFor("900 rows", async () => (await count()) === 900, 60_000);
    expect(await count("SELECT count(DISTINCT id)::int AS n FROM audit_events")).toBe(900);
    for (const z of zones) {
      const seqs = await db.pool.query<{ chain_seq: string }>("SELECT chain_seq FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq", [z]);
      expect(seqs.rows.map((r) => Number(r.chain_seq))).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
      expect((await verifyZone(z, {}, { pool: db.pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 })).breaks).toEqual([]);
    }
    // both replicas did work
    const byConsumer = await redis.client.xinfo("CONSUMERS", `${redis.keyPrefix}${AUDIT_STREAM}`, "audit-ingestor");
    expect((byConsumer as unknown[]).length).toBe(2);
    await waitFor("no pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0);
  });

  it("PostgreSQL unavailable: nothing is acked (even past max deliveries), everything is stored once it is back", async () => {
    const proxy = await startTcpProxy("127.0.0.1", Number(new URL(db.url).port || 5432));
    try {
      const viaProxy = withDatabase(db.url.replace(/@[^/]+\//, `@127.0.0.1:${proxy.port}/`), db.name);
      await start("audit-test-0", viaProxy);
      await xaddRaw(redis.client, redis.keyPrefix, makeFrame(makeEvent({ zone_id: "warm" })));
      await waitFor("first event stored", async () => (await count()) > 0);
      await waitFor("warm-up acked", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0);
      await proxy.cut();
      const events = Array.from({ length: 50 }, () => makeEvent({ zone_id: "z" }));
      for (const e of events) await xaddRaw(redis.client, redis.keyPrefix, makeFrame(e));
      // retried every second (claim idle 1 s) until deliveries pass AUDIT_MAX_DELIVERIES=3; the dlq
      // table is unreachable too, so the entries must stay pending
      await waitFor(
        "deliveries past the maximum",
        async () => {
          const rows = (await redis.client.xpending(`${redis.keyPrefix}${AUDIT_STREAM}`, "audit-ingestor", "-", "+", 100)) as Array<[string, string, number, number]>;
          return rows.length === 50 && rows.every((r) => Number(r[3]) > 3);
        },
        30_000,
      );
      expect(await pendingCount(redis.client, redis.keyPrefix)).toBe(50);
      await proxy.restore();
      await waitFor("all stored", async () => (await count("SELECT count(*)::int AS n FROM audit_events WHERE zone_id = 'z'")) === 50, 30_000);
      await waitFor("no pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0);
      expect(await count("SELECT count(*)::int AS n FROM audit_events_dlq")).toBe(0);
      expect(await deadLetters(redis.client, redis.keyPrefix)).toEqual([]);
      const seqs = await db.pool.query<{ chain_seq: string }>("SELECT chain_seq FROM audit_events WHERE zone_id = 'z' ORDER BY chain_seq");
      expect(seqs.rows.map((r) => Number(r.chain_seq))).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    } finally {
      await proxy.close();
    }
  });

  it("an entry whose write keeps failing goes to audit_events_dlq after AUDIT_MAX_DELIVERIES and is acked; the rest of its batch is stored", async () => {
    // PostgreSQL has no year 0 (a row it refuses): a signed event it refuses (NUL characters, which it refuses too, are stripped)
    const poison = makeEvent({ zone_id: "z", occurred_at: "0000-01-01T00:00:00Z" });
    const a = makeEvent({ zone_id: "z" });
    const b = makeEvent({ zone_id: "z" });
    await xaddRaw(redis.client, redis.keyPrefix, makeFrame(a));
    const poisonId = await xaddRaw(redis.client, redis.keyPrefix, makeFrame(poison));
    await xaddRaw(redis.client, redis.keyPrefix, makeFrame(b));
    await start();
    await waitFor("two good rows", async () => (await count()) === 2);
    await waitFor("dlq row", async () => (await count("SELECT count(*)::int AS n FROM audit_events_dlq")) === 1, 30_000);
    const dlq = await db.pool.query<{ stream_entry_id: string; attempts: number; original_event_json: Record<string, string>; error: string }>(
      "SELECT stream_entry_id, attempts, original_event_json, error FROM audit_events_dlq",
    );
    expect(dlq.rows[0]!.stream_entry_id).toBe(poisonId);
    expect(dlq.rows[0]!.attempts).toBe(3);
    expect(dlq.rows[0]!.original_event_json.id).toBe(poison.id);
    await waitFor("no pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0);
    expect(await deadLetters(redis.client, redis.keyPrefix)).toEqual([]);
  });
});
