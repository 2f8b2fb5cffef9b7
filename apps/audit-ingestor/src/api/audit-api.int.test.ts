import { DeadLetterWriter, Topics, signaturePolicy, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { LedgerWriter } from "../ledger/writer.js";
import { TEST_AUDIT_KEY, TEST_STREAMS_KEY_HEX, ledgerInput, makeEvent, makeFrame } from "../test-support/events.js";
import { silentLogger } from "../test-support/harness.js";
import { auditApiRoutes } from "./audit-api.js";
import { brokenLimit, sampleBacklog, watchReadinessLimits } from "./readiness-limits.js";

const TOKEN = "operator-token-0123456789";
const DLQ = Topics.auditEvents.deadLetterStream as string;
/** A JSON body to assert on; its shape is what the assertions check. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function body(response: Response | Promise<Response>): Promise<any> {
  return (await response).json();
}
const signing = signaturePolicy({ mode: "stable", keyHex: TEST_STREAMS_KEY_HEX });

describe.skipIf(!hasPostgres() || !hasRedis())("audit operator routes (upstream's /api/audit/*)", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  beforeEach(async () => {
    db = await createMigratedDatabase();
    redis = await createTestRedis("auditapi");
  });
  afterEach(async () => {
    await redis.close();
    await db.drop();
  });

  const routes = (adminToken: string | undefined = TOKEN) =>
    auditApiRoutes({ pool: db.pool, redis: redis.client, signing, keyPrefix: redis.keyPrefix, adminToken, logger: silentLogger });
  const get = (path: string, token: string | null = TOKEN) => routes().request(path, { headers: token === null ? {} : { Authorization: `Bearer ${token}` } });

  it("are off (404) without AUDIT_ADMIN_TOKEN and refuse a wrong or missing bearer (401)", async () => {
    expect((await routes("").request("/api/audit/dlq", { headers: { Authorization: `Bearer ${TOKEN}` } })).status).toBe(404);
    expect((await get("/api/audit/dlq", "wrong")).status).toBe(401);
    expect((await get("/api/audit/dlq", `${TOKEN}x`)).status).toBe(401);
    const missing = await get("/api/audit/dlq", null);
    expect(missing.status).toBe(401);
    expect(missing.headers.get("WWW-Authenticate")).toContain("Bearer");
    expect((await get("/api/audit/dlq")).status).toBe(200);
  });

  it("search: a zone's events in chain order with upstream's row shape, filters and paging", async () => {
    const writer = new LedgerWriter({ pool: db.pool, auditKey: TEST_AUDIT_KEY });
    const now = new Date();
    const at = (minutesAgo: number) => new Date(now.getTime() - minutesAgo * 60_000).toISOString();
    const events = [
      makeEvent({ zone_id: "zs", decision: "allow", occurred_at: at(30) }),
      makeEvent({ zone_id: "zs", decision: "deny", occurred_at: at(20) }),
      makeEvent({ zone_id: "zs", decision: "allow", occurred_at: at(10) }),
      makeEvent({ zone_id: "other", decision: "allow", occurred_at: at(10) }),
    ];
    await writer.writeBatch(events.map((e) => ledgerInput(e)));

    expect((await get("/api/audit/search")).status).toBe(400);
    const all = await body(get("/api/audit/search?zone_id=zs"));
    expect(all.events.map((e: { Event: { id: string } }) => e.Event.id)).toEqual(events.slice(0, 3).map((e) => e.id));
    expect(all.events.map((e: { ChainSeq: number }) => e.ChainSeq)).toEqual([1, 2, 3]);
    expect(all.events[1].PrevContentSHA256).toBe(all.events[0].ContentSHA256);
    expect(all.events[0].PrevContentSHA256).toBe("");
    expect(all.events[0]).toMatchObject({ Event: { zone_id: "zs", decision: "allow", evaluation_status: "complete" } });
    expect(all.events[0].ChainHMAC).toMatch(/^[0-9a-f]{64}$/);
    expect(all.next_cursor).toBe("3");

    const denies = await body(get("/api/audit/search?zone_id=zs&decision=deny"));
    expect(denies.events.map((e: { Event: { id: string } }) => e.Event.id)).toEqual([events[1]!.id]);
    const page1 = await body(get("/api/audit/search?zone_id=zs&limit=2"));
    expect(page1.events).toHaveLength(2);
    const page2 = await body(get(`/api/audit/search?zone_id=zs&limit=2&cursor=${page1.next_cursor}`));
    expect(page2.events.map((e: { ChainSeq: number }) => e.ChainSeq)).toEqual([3]);
    const window = await body(get(`/api/audit/search?zone_id=zs&since=${encodeURIComponent(at(25))}&until=${encodeURIComponent(at(15))}`));
    expect(window.events).toHaveLength(1);
    expect((await get("/api/audit/search?zone_id=zs&since=yesterday")).status).toBe(400);
  });

  it("dlq list, detail and replay: replayable letters go back to the stream, the others stay", async () => {
    const writer = new DeadLetterWriter({ redis: redis.client, signing, keyPrefix: redis.keyPrefix });
    const retryable = makeEvent({ zone_id: "zr" });
    const forged = makeEvent({ zone_id: "zr" });
    const frame = makeFrame(retryable);
    await writer.write(DLQ, [
      { reason: "max_deliveries_exceeded", srcStream: Topics.auditEvents.stream, srcId: "5-1", group: "audit-ingestor", consumer: "c", deliveries: 6, error: "database unavailable", fields: frame },
      { reason: "signature_invalid", srcStream: Topics.auditEvents.stream, srcId: "5-2", group: "audit-ingestor", consumer: "c", deliveries: 1, error: "sig does not match", fields: { ...makeFrame(forged), sig: "00" } },
    ]);

    const list = await body(get("/api/audit/dlq"));
    expect(list.entries).toHaveLength(2);
    expect(list.entries[0]).toMatchObject({ source_id: "5-1", reason: "max_deliveries_exceeded", replayable: true, event_id: retryable.id, zone_id: "zr" });
    expect(list.entries[1]).toMatchObject({ source_id: "5-2", replayable: false });
    expect(list.next_cursor).toBe(list.entries[1].id);

    const detail = await body(get(`/api/audit/dlq/${list.entries[0].id}`));
    expect(detail.source_event).toMatchObject({ id: retryable.id });
    expect((await get("/api/audit/dlq/1-1")).status).toBe(404);
    expect((await get("/api/audit/dlq/not-an-id")).status).toBe(400);

    const replay = await routes().request("/api/audit/dlq/replay", { method: "POST", headers: { Authorization: `Bearer ${TOKEN}` } });
    expect(await body(replay)).toEqual({ scanned: 2, replayed: 1, skipped: 1 });
    const stream = (await redis.client.xrange(streamKey(Topics.auditEvents.stream, redis.keyPrefix), "-", "+")) as Array<[string, string[]]>;
    expect(stream).toHaveLength(1);
    const fields = Object.fromEntries(stream[0]![1].reduce<string[][]>((acc, v, i, a) => (i % 2 === 0 ? [...acc, [v, a[i + 1]!]] : acc), []));
    // the frame as the producer sent it, re-signed for the stream
    expect(fields).toMatchObject({ id: frame.id, data: frame.data, sig: frame.sig });
    expect(signing.signer!.verify(Topics.auditEvents.stream, fields)).toBe("valid");
    expect(await redis.client.xlen(streamKey(DLQ, redis.keyPrefix))).toBe(1);
  });

  it("readiness limits: the dead letters, the backlog and the oldest pending entry", async () => {
    const key = streamKey(Topics.auditEvents.stream, redis.keyPrefix);
    await redis.client.xgroup("CREATE", key, Topics.auditEvents.groups.auditIngestor, "0", "MKSTREAM");
    for (let i = 0; i < 5; i++) await redis.client.xadd(key, "*", "id", `e${i}`);
    await redis.client.xreadgroup("GROUP", Topics.auditEvents.groups.auditIngestor, "c1", "COUNT", 2, "STREAMS", key, ">");
    await redis.client.xadd(streamKey(DLQ, redis.keyPrefix), "*", "reason", "schema_invalid");
    await new Promise((r) => setTimeout(r, 1100));
    const sample = await sampleBacklog(redis.client, redis.keyPrefix);
    expect(sample).toMatchObject({ dlqLength: 1, waiting: 5 });
    expect(sample.pendingOldestSeconds).toBeGreaterThanOrEqual(1);
    expect(brokenLimit(sample, { dlqMax: 0, lagMax: 0, pendingOldestSecondsMax: 0 })).toBeUndefined();
    expect(brokenLimit(sample, { dlqMax: 1, lagMax: 5, pendingOldestSecondsMax: 3600 })).toBeUndefined();
    expect(brokenLimit(sample, { dlqMax: 0, lagMax: 4, pendingOldestSecondsMax: 0 })).toBe("audit_lag_threshold");
    expect(brokenLimit(sample, { dlqMax: 0, lagMax: 0, pendingOldestSecondsMax: 0.5 })).toBe("audit_pel_oldest_threshold");

    const controller = new AbortController();
    const watch = watchReadinessLimits({ redis: redis.client, keyPrefix: redis.keyPrefix, limits: { dlqMax: 0, lagMax: 0, pendingOldestSecondsMax: 0 }, intervalMs: 50 }, controller.signal);
    expect(watch.ready()).toBe(true);
    const strict = watchReadinessLimits({ redis: redis.client, keyPrefix: redis.keyPrefix, limits: { dlqMax: 0, lagMax: 3, pendingOldestSecondsMax: 0 }, intervalMs: 50 }, controller.signal);
    await new Promise((r) => setTimeout(r, 200));
    expect(strict.ready()).toBe(false);
    expect(strict.reason()).toBe("audit_lag_threshold");
    controller.abort();
    await Promise.all([watch.stopped, strict.stopped]);
  });
});
