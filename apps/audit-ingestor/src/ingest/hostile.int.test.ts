/**
 * Hostile and upstream-shaped input against the real ingestor (issues 15 and 16): signed events carrying
 * NUL characters, rows PostgreSQL refuses beside very large rows, frames exactly as each upstream
 * producer builds them, and random valid events whose every value must survive ingest for `verify`.
 */
import { randomUUID } from "node:crypto";

import { signAuditData } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { AuditIngestor } from "../app.js";
import { startAuditIngestor } from "../app.js";
import { TEST_AUDIT_KEY, makeEvent } from "../test-support/events.js";
import { deadLetters, pendingCount, silentLogger, testConfig, waitFor, xaddRaw } from "../test-support/harness.js";
import { verifyZone } from "../verify/ledger-verify.js";

/** A frame `{id, data, sig}` of any JSON value, its data text exactly as given. */
function frameOf(data: string, frameId: string): Record<string, string> {
  return { id: frameId, data, sig: signAuditData(TEST_AUDIT_KEY, data) };
}

describe.skipIf(!hasPostgres() || !hasRedis())("hostile and upstream-shaped audit input", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const controllers: AbortController[] = [];
  const apps: AuditIngestor[] = [];

  beforeEach(async () => {
    db = await createMigratedDatabase();
    redis = await createTestRedis("hostile");
  });
  afterEach(async () => {
    for (const c of controllers.splice(0)) c.abort();
    await Promise.all(apps.splice(0).map((a) => a.done));
    await redis.close();
    await db.drop();
  });

  async function start(extra: Record<string, string> = {}) {
    const controller = new AbortController();
    controllers.push(controller);
    const app = await startAuditIngestor(testConfig({ databaseUrl: db.url, redisUrl: redis.url, keyPrefix: redis.keyPrefix, extra }), {
      logger: silentLogger,
      signal: controller.signal,
      blockMs: 200,
    });
    apps.push(app);
    return app;
  }
  const count = async (sql = "SELECT count(*)::int AS n FROM audit_events", params: unknown[] = []) => (await db.pool.query<{ n: number }>(sql, params)).rows[0]!.n;
  const flagged = async () => count("SELECT count(*)::int AS n FROM audit_events WHERE tamper_detected");

  it("NUL characters in zone_id, id or chain.producer of a signed event: stored stripped, its neighbours at once, nothing dead-lettered (15.1)", async () => {
    const before = makeEvent({ zone_id: "zn" });
    const nulZone = makeEvent({ zone_id: "zn\u0000" });
    const nulId = makeEvent({ zone_id: "zn", id: `id-\u0000-${randomUUID()}` });
    const nulProducer = makeEvent({ zone_id: "zn", chain: { producer: "p\u0000", seq: 1, prev: "" } });
    const after = makeEvent({ zone_id: "zn" });
    for (const e of [before, nulZone, nulId, nulProducer, after]) await xaddRaw(redis.client, redis.keyPrefix, frameOf(JSON.stringify(e), e.id));
    const app = await start({ AUDIT_MAX_DELIVERIES: "3" });
    await waitFor("five rows", async () => (await count()) === 5, 15_000);
    await waitFor("no pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0, 15_000);
    expect(await deadLetters(redis.client, redis.keyPrefix)).toEqual([]);
    const ids = (await db.pool.query<{ id: string; zone_id: string; producer_id: string | null }>("SELECT id, zone_id, producer_id FROM audit_events ORDER BY chain_seq")).rows;
    expect(ids.every((r) => !r.id.includes("\u0000") && r.zone_id === "zn")).toBe(true);
    expect(ids.map((r) => r.producer_id)).toContain("p");
    expect((await verifyZone("zn", {}, { pool: db.pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 })).breaks).toEqual([]);
    expect(await app.metrics.registry.getSingleMetricAsString("caracal_audit_schema_deviations_total")).toMatch(/field="nul_stripped"} 3/);
  });

  it("rows PostgreSQL refuses beside 10 MB rows delay the events after them by less than 2 s (15.7)", async () => {
    // The same backlog twice, on two key prefixes: 4 rows of 10 MB then 300 small events, without and
    // with 3 rows PostgreSQL refuses among the big ones. The delay the refused rows add is what counts:
    // the big rows themselves cost the same either way.
    const big = (zone: string, i: number) => makeEvent({ zone_id: zone, metadata_json: { blob: `${i}`.repeat(10 * 1024 * 1024) } });
    const refused = (zone: string) => makeEvent({ zone_id: zone, occurred_at: "0000-01-01T00:00:00Z" });
    async function drain(name: string, withRefused: boolean): Promise<number> {
      const keyPrefix = `${redis.keyPrefix}${name}:`;
      const zb = `zb-${name}`;
      const zl = `zl-${name}`;
      const head = withRefused ? [big(zb, 1), refused(zb), big(zb, 2), refused(zb), big(zb, 3), refused(zb), big(zb, 4)] : [big(zb, 1), big(zb, 2), big(zb, 3), big(zb, 4)];
      for (const e of head) await xaddRaw(redis.client, keyPrefix, frameOf(JSON.stringify(e), e.id));
      for (let i = 0; i < 300; i++) {
        const e = makeEvent({ zone_id: zl });
        await xaddRaw(redis.client, keyPrefix, frameOf(JSON.stringify(e), e.id));
      }
      const controller = new AbortController();
      controllers.push(controller);
      const started = performance.now();
      const app = await startAuditIngestor(
        testConfig({ databaseUrl: db.url, redisUrl: redis.url, keyPrefix, extra: { AUDIT_MAX_DELIVERIES: "3", AUDIT_MAX_INFLIGHT_BYTES: String(64 * 1024 * 1024) } }),
        { logger: silentLogger, signal: controller.signal, blockMs: 200 },
      );
      apps.push(app);
      await waitFor(`the 300 later events (${name})`, async () => (await count("SELECT count(*)::int AS n FROM audit_events WHERE zone_id = $1", [zl])) === 300, 60_000, 20);
      const seconds = (performance.now() - started) / 1000;
      expect(await count("SELECT count(*)::int AS n FROM audit_events WHERE zone_id = $1", [zb])).toBe(4);
      controller.abort();
      await app.done;
      return seconds;
    }
    const baseline = await drain("clean", false);
    const withRefused = await drain("refused", true);
    console.log(`15.7: 4 x 10 MB rows then 300 events: stored after ${baseline.toFixed(2)} s; with 3 refused rows among them ${withRefused.toFixed(2)} s (+${(withRefused - baseline).toFixed(2)} s)`);
    // Goal: under 2 s (issue 15.7). The bound below leaves half a second for a CI machine busy with other
    // suites; the binary search this replaced added about as much as the big rows cost (several seconds).
    expect(withRefused - baseline).toBeLessThan(2.5);
  }, 120_000);

  it("stores every frame as each upstream producer builds it (16)", async () => {
    const at = "2026-12-05T02:30:01.123456789+01:00"; // Go's time.Now() in JSON: nanoseconds and an offset
    const req = `req-${randomUUID()}`;
    const events: Array<{ event: Record<string, unknown>; frameId: string }> = [
      // STS: allow with a bundle; deny with an empty OPA result (null lists); step-up issued and consumed
      { event: { id: randomUUID(), zone_id: "zu", event_type: "token_exchange", request_id: req, decision: "allow", policy_set_version_id: "psv-1", manifest_sha: "sha256:ab", evaluation_status: "complete", determining_policies_json: [{ id: "p1" }], diagnostics_json: [], metadata_json: { subject: "app-1" }, occurred_at: at }, frameId: "" },
      { event: { id: randomUUID(), zone_id: "zu", event_type: "token_exchange", request_id: req, decision: "deny", evaluation_status: "policy_eval_failed", determining_policies_json: null, diagnostics_json: null, occurred_at: at }, frameId: "" },
      { event: { id: randomUUID(), zone_id: "zu", event_type: "step_up_issued", request_id: req, decision: "pending", evaluation_status: "complete", determining_policies_json: null, diagnostics_json: null, metadata_json: { challenge_id: "c1" }, occurred_at: at }, frameId: "" },
      { event: { id: randomUUID(), zone_id: "zu", event_type: "step_up_consumed", request_id: req, decision: "consumed", evaluation_status: "complete", determining_policies_json: null, diagnostics_json: null, occurred_at: at }, frameId: "" },
      // gateway replay detection; API control audit with a run launch
      { event: { id: randomUUID(), zone_id: "zu", event_type: "replay_detected", request_id: req, decision: "deny", evaluation_status: "complete", determining_policies_json: [], diagnostics_json: [{ reason: "jti_reused" }], occurred_at: "2026-12-05T01:30:01.5Z" }, frameId: "" },
      { event: { id: randomUUID(), zone_id: "zu", event_type: "run_launch", request_id: req, decision: "allow", evaluation_status: "complete", determining_policies_json: null, diagnostics_json: null, metadata_json: { run_id: "r1" }, occurred_at: "2026-12-05T01:30:02.000Z" }, frameId: "" },
      // credential reveal and operator approvals: the frame id is the request id, not data.id
      { event: { id: randomUUID(), zone_id: "zu", event_type: "credential_reveal", request_id: req, decision: "allow", evaluation_status: "complete", determining_policies_json: [], diagnostics_json: [], occurred_at: "2026-12-05T01:30:03Z" }, frameId: req },
      { event: { id: randomUUID(), zone_id: "zu", event_type: "operator_approval", request_id: req, decision: "approved", evaluation_status: "complete", determining_policies_json: [], diagnostics_json: [], occurred_at: "2026-12-05T01:30:04Z" }, frameId: req },
      { event: { id: randomUUID(), zone_id: "zu", event_type: "operator_approval", request_id: req, decision: "rejected", occurred_at: "2026-12-05T01:30:05Z" }, frameId: req },
    ];
    for (const { event, frameId } of events) await xaddRaw(redis.client, redis.keyPrefix, frameOf(JSON.stringify(event), frameId || (event.id as string)));
    // the outbox's frame {outbox_id, id, data, sig, _sig-less here} and a frame without sig fields beyond
    const viaOutbox = { id: randomUUID(), zone_id: "zu", event_type: "grant_revoked", request_id: req, decision: "allow", evaluation_status: "complete", determining_policies_json: [], diagnostics_json: [], occurred_at: at };
    await xaddRaw(redis.client, redis.keyPrefix, { outbox_id: randomUUID(), ...frameOf(JSON.stringify(viaOutbox), viaOutbox.id) });
    const app = await start();
    await waitFor("every upstream frame stored", async () => (await count("SELECT count(*)::int AS n FROM audit_events WHERE zone_id = 'zu'")) === events.length + 1, 15_000);
    expect(await deadLetters(redis.client, redis.keyPrefix)).toEqual([]);
    const rows = (await db.pool.query<{ id: string; decision: string; determining_policies_json: unknown }>("SELECT id, decision, determining_policies_json FROM audit_events WHERE zone_id = 'zu' ORDER BY chain_seq")).rows;
    // identity is data.id; values kept as sent (a JSON null stays null, not absent)
    expect(rows.map((r) => r.id)).toEqual([...events.map((e) => e.event.id), viaOutbox.id]);
    expect(rows.map((r) => r.decision)).toEqual(["allow", "deny", "pending", "consumed", "deny", "allow", "allow", "approved", "rejected", "allow"]);
    expect(rows[1]!.determining_policies_json).toBeNull();
    const raw = await db.pool.query<{ j: string | null }>("SELECT determining_policies_json::text AS j FROM audit_events WHERE id = $1", [events[1]!.event.id]);
    expect(raw.rows[0]!.j).toBe("null");
    const occurred = await db.pool.query<{ t: string }>("SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS t FROM audit_events WHERE id = $1", [events[0]!.event.id]);
    expect(occurred.rows[0]!.t).toBe("2026-12-05T01:30:01.123457"); // PostgreSQL rounds to microseconds
    expect((await verifyZone("zu", {}, { pool: db.pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 })).breaks).toEqual([]);
    const deviations = await app.metrics.registry.getSingleMetricAsString("caracal_audit_schema_deviations_total");
    expect(deviations).toMatch(/field="decision"/);
    expect(deviations).toMatch(/field="determining_policies_json"/);
    expect(deviations).toMatch(/field="frame_id"} 3/);
  });

  it("random valid events survive ingest exactly: verify finds nothing, no row is flagged (15.3, property)", async () => {
    const app = await start();
    const key = fc.oneof(fc.constantFrom("__proto__", "constructor", "toString", "ünï", "𝒦", "a.b", ""), fc.string({ maxLength: 6 }));
    const leaf = fc.oneof(
      fc.string({ unit: "grapheme", maxLength: 12 }),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.constantFrom(2 ** 53 + 2, 1e21, 1.5e-7, -0, 0.1 + 0.2, -(2 ** 60)),
      fc.boolean(),
      fc.constant(null),
    );
    const { tree } = fc.letrec((tie) => ({
      tree: fc.oneof({ depthSize: "small", withCrossShrink: true }, leaf, fc.array(tie("tree"), { maxLength: 3 }), fc.dictionary(key, tie("tree"), { maxKeys: 4 })),
    }));
    const timestamp = fc.oneof(
      fc.constantFrom("2026-12-05T02:30:28.9999996Z", "2026-12-05T02:30:28.123456789+05:30", "2026-12-05T02:30:28Z", "2026-12-05T02:30:28.5-08:00", "1999-12-31T23:59:59.9999999+14:00"),
      fc.date({ min: new Date("1971-01-01"), max: new Date("2100-01-01"), noInvalidDate: true }).map((d) => d.toISOString()),
    );
    const event = fc.record({
      metadata_json: fc.dictionary(key, tree, { maxKeys: 5 }),
      determining_policies_json: fc.oneof(fc.constant(null), fc.array(tree, { maxLength: 3 })),
      diagnostics_json: fc.oneof(fc.constant(null), fc.array(tree, { maxLength: 3 })),
      decision: fc.oneof(fc.constantFrom("allow", "deny", "pending", "approved"), fc.string({ maxLength: 5 })),
      occurred_at: timestamp,
      extra: tree,
    });
    const samples = fc.sample(event, { numRuns: 150, seed: 20261205 });
    for (const s of samples) {
      const e = { id: randomUUID(), zone_id: "zp", event_type: "token_exchange", request_id: "r", evaluation_status: "complete", ...s };
      await xaddRaw(redis.client, redis.keyPrefix, frameOf(JSON.stringify(e), e.id));
    }
    // numbers as producers may write them, beyond what a double holds: stored and hashed as sent
    const rawTexts = [
      `{"id":"${randomUUID()}","zone_id":"zp","occurred_at":"2026-12-05T02:30:28Z","metadata_json":{"big":12345678901234567890123,"frac":0.1000000000000000055511151231257827,"exp":1E+2}}`,
      `{"id":"${randomUUID()}","zone_id":"zp","occurred_at":"2026-12-05T02:30:28Z","metadata_json":{"__proto__":{"x":1},"constructor":[],"n":-0.0}}`,
    ];
    for (const text of rawTexts) await xaddRaw(redis.client, redis.keyPrefix, frameOf(text, "raw"));
    const total = samples.length + rawTexts.length;
    await waitFor("every random event stored", async () => (await count("SELECT count(*)::int AS n FROM audit_events WHERE zone_id = 'zp'")) === total, 30_000);
    expect(await deadLetters(redis.client, redis.keyPrefix)).toEqual([]);
    const result = await verifyZone("zp", {}, { pool: db.pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 });
    expect(result.breaks).toEqual([]);
    expect(result.rowsChecked).toBe(total);
    // the tamper sweeper's verdict is the same
    expect(await flagged()).toBe(0);
    expect(app.consumer.state).toBe("running");
  }, 60_000);
});
