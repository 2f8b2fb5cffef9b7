/**
 * The revocation consumer as real processes against real Redis and PostgreSQL: three replicas all see a
 * revocation, a replica started later still denies, every anchor kind, duplicates, upstream-style reads,
 * the epoch, reconcile after a flush, one dead letter with three replicas.
 */
import { randomBytes, randomUUID } from "node:crypto";

import { Topics, StreamPublisher, signaturePolicy, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, type TestRedis } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { startConsumerProcess, waitFor, type ConsumerProcess } from "./test-support/processes.js";

const KEY_HEX = randomBytes(32).toString("hex");
const ZONE = "zone-a";
const DAY_MS = 86_400_000;

describe("revocation consumer (three real processes)", () => {
  let redis: TestRedis;
  let db: TestDatabase;
  let pool: pg.Pool;
  let publisher: StreamPublisher;
  let env: Record<string, string>;
  const replicas: ConsumerProcess[] = [];

  beforeAll(async () => {
    redis = await createTestRedis("rev");
    db = await createMigratedDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    publisher = new StreamPublisher({ redis: redis.client, signing: signaturePolicy({ mode: "rc", keyHex: KEY_HEX }), keyPrefix: redis.keyPrefix });
    env = {
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      CARACAL_MODE: "rc",
      STREAMS_HMAC_KEY: KEY_HEX,
      CARACAL_KEY_PREFIX: redis.keyPrefix,
      REVOCATION_BLOCK_MS: "200",
      REVOCATION_MAX_CONTACT_AGE_MS: "3000",
      REVOCATION_RECONCILE_INTERVAL_MS: "500",
      REVOCATION_RESEED_INTERVAL_MS: "1000",
      REVOCATION_MAX_SEED_AGE_MS: "10000",
    };
    const started = await Promise.all([0, 1, 2].map((i) => startConsumerProcess({ ...env, HOSTNAME: `replica-${i}` })));
    replicas.push(...started);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await pool?.end();
    await db?.drop();
    await redis?.close();
  });

  const revoke = (fields: Record<string, string>) => publisher.publish(Topics.sessionsRevoke.stream, { zone_id: ZONE, reason: "test", ...fields });
  const revokedIn = async (r: ConsumerProcess, anchor: string, id: string) => {
    const res = await r.get(`/v1/zones/${ZONE}/revocations/${anchor}/${id}`);
    return res.status === 200 && res.body.revoked === true;
  };
  const everywhere = (anchor: string, id: string) => waitFor(async () => (await Promise.all(replicas.map((r) => revokedIn(r, anchor, id)))).every(Boolean), 10_000, () => `${anchor} ${id} revoked everywhere`);

  it.each(["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id"])("a %s revocation is seen by all three replicas, in the table and under upstream's key", async (anchor) => {
    const id = randomUUID();
    const other = randomUUID();
    expect(await revokedIn(replicas[0]!, anchor, id)).toBe(false);
    await revoke({ [anchor]: id });
    await everywhere(anchor, id);
    // upstream reader: GET caracal:revoked:sessions:{id} = "1" with a TTL of about a day
    await waitFor(async () => (await redis.client.get(`${redis.keyPrefix}caracal:revoked:sessions:${id}`)) === "1", 10_000);
    const pttl = await redis.client.pttl(`${redis.keyPrefix}caracal:revoked:sessions:${id}`);
    expect(pttl).toBeGreaterThan(DAY_MS - 60_000);
    expect(pttl).toBeLessThanOrEqual(DAY_MS);
    const rows = await pool.query("SELECT zone_id, anchor_kind, reason FROM session_revocations WHERE anchor_id = $1", [id]);
    expect(rows.rows).toEqual([{ zone_id: ZONE, anchor_kind: anchor, reason: "test" }]);
    expect(await revokedIn(replicas[1]!, anchor, other)).toBe(false);
  });

  it("edge_id is checked as a delegation anchor, in the batch check too", async () => {
    const edge = randomUUID();
    await revoke({ delegation_edge_id: edge });
    await everywhere("edge_id", edge);
    const res = await replicas[2]!.post(`/v1/zones/${ZONE}/revocations:check`, { anchors: { session_id: randomUUID(), edge_id: edge } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ revoked: true, outcome: "revoked", revoked_anchors: ["edge_id"] });
    const active = await replicas[2]!.post(`/v1/zones/${ZONE}/revocations:check`, { anchors: { session_id: randomUUID() } });
    expect(active.body).toMatchObject({ revoked: false, outcome: "active" });
  });

  it("a duplicated revocation changes nothing", async () => {
    const id = randomUUID();
    await revoke({ session_id: id });
    await everywhere("session_id", id);
    await waitFor(async () => (await pool.query("SELECT 1 FROM session_revocations WHERE anchor_id = $1", [id])).rowCount === 1, 10_000);
    const before = await pool.query("SELECT revoked_at, expires_at, source_stream_id FROM session_revocations WHERE anchor_id = $1", [id]);
    await revoke({ session_id: id });
    await revoke({ session_id: id, sid: "null" });
    const marker = randomUUID();
    await revoke({ session_id: marker });
    await everywhere("session_id", marker);
    await waitFor(async () => (await pool.query("SELECT 1 FROM session_revocations WHERE anchor_id = $1", [marker])).rowCount === 1, 10_000);
    const after = await pool.query("SELECT revoked_at, expires_at, source_stream_id FROM session_revocations WHERE anchor_id = $1", [id]);
    expect(after.rows).toEqual(before.rows);
    // the literal "null" is absent, never an anchor
    expect((await pool.query("SELECT 1 FROM session_revocations WHERE anchor_id = 'null'")).rowCount).toBe(0);
  });

  it("a replica started later still denies", async () => {
    const id = randomUUID();
    await revoke({ root_sid: id });
    await everywhere("root_sid", id);
    await waitFor(async () => (await pool.query("SELECT 1 FROM session_revocations WHERE anchor_id = $1", [id])).rowCount === 1, 10_000);
    const late = await startConsumerProcess({ ...env, HOSTNAME: "replica-late" });
    try {
      expect(await revokedIn(late, "root_sid", id)).toBe(true);
    } finally {
      await late.stop();
    }
  }, 90_000);

  it("the delegation epoch only goes up, in the table and under upstream's key", async () => {
    const zone = `zone-${randomUUID()}`;
    const epochKey = `${redis.keyPrefix}caracal:revoked:sessions:delegation-epoch:${zone}`;
    await publisher.publish(Topics.delegationsInvalidate.stream, { event: "edge_revoke", zone_id: zone, epoch: "7" });
    await waitFor(async () => (await redis.client.get(epochKey)) === "7", 10_000);
    await publisher.publish(Topics.delegationsInvalidate.stream, { event: "edge_revoke", zone_id: zone, epoch: "5" });
    await publisher.publish(Topics.delegationsInvalidate.stream, { event: "edge_revoke", zone_id: `${zone}-marker`, epoch: "1" });
    await waitFor(async () => (await redis.client.get(`${epochKey}-marker`)) === "1", 10_000);
    expect(await redis.client.get(epochKey)).toBe("7");
    const row = await pool.query("SELECT epoch::text FROM delegation_epochs WHERE zone_id = $1", [zone]);
    expect(row.rows).toEqual([{ epoch: "7" }]);
    await publisher.publish(Topics.delegationsInvalidate.stream, { event: "edge_revoke", zone_id: zone, epoch: "12" });
    await waitFor(async () => (await redis.client.get(epochKey)) === "12", 10_000);
  });

  it("Redis flushed: reconcile restores every key with its remaining TTL", async () => {
    const ids = Array.from({ length: 20 }, () => randomUUID());
    for (const id of ids) await revoke({ session_id: id });
    await waitFor(async () => (await redis.client.exists(...ids.map((id) => `${redis.keyPrefix}caracal:revoked:sessions:${id}`))) === ids.length, 10_000);
    const keys = await redis.client.keys(`${redis.keyPrefix}caracal:revoked:sessions:*`);
    expect(keys.length).toBeGreaterThanOrEqual(ids.length);
    await redis.client.del(...keys);
    await waitFor(async () => (await redis.client.exists(...keys)) === keys.length, 10_000, () => "keys restored");
    for (const k of keys.filter((k) => !k.includes("delegation-epoch"))) {
      const pttl = await redis.client.pttl(k);
      expect(pttl).toBeGreaterThan(0);
      expect(pttl).toBeLessThanOrEqual(DAY_MS);
    }
    // the replicas' reconcile loops together repaired at least every deleted key
    let repaired = 0;
    for (const r of replicas) {
      const m = /^caracal_revocation_keys_repaired_total (\d+)/m.exec(String((await r.get("/metrics")).body.text));
      repaired += Number(m?.[1] ?? 0);
    }
    expect(repaired).toBeGreaterThanOrEqual(keys.filter((k) => !k.includes("delegation-epoch")).length);
  });

  it("unsigned, wrong-signature and anchorless entries: exactly one dead letter each with three replicas and their caches", async () => {
    const key = streamKey(Topics.sessionsRevoke.stream, redis.keyPrefix);
    const dead = streamKey(Topics.sessionsRevoke.deadLetterStream!, redis.keyPrefix);
    const unsigned = await redis.client.xadd(key, "*", "zone_id", ZONE, "reason", "x", "session_id", randomUUID());
    const wrong = await redis.client.xadd(key, "*", "zone_id", ZONE, "reason", "x", "session_id", randomUUID(), "_sig", "0".repeat(64));
    const anchorless = await publisher.publish(Topics.sessionsRevoke.stream, { zone_id: ZONE, reason: "x", session_id: "null" });
    const marker = randomUUID();
    await revoke({ session_id: marker });
    await everywhere("session_id", marker);
    // let every cache and replica pass the bad entries, then count
    await new Promise((r) => setTimeout(r, 1500));
    const letters = (await redis.client.xrange(dead, "-", "+")).map(([, f]) => {
      const m: Record<string, string> = {};
      for (let i = 0; i < f.length; i += 2) m[f[i]!] = f[i + 1]!;
      return m;
    });
    const of = (id: string | null) => letters.filter((l) => l.src_id === id);
    expect(of(unsigned).map((l) => l.reason)).toEqual(["signature_missing"]);
    expect(of(wrong).map((l) => l.reason)).toEqual(["signature_invalid"]);
    expect(of(anchorless).map((l) => l.reason)).toEqual(["schema_invalid"]);
    // nothing blocks the group
    const pending = (await redis.client.xpending(key, Topics.sessionsRevoke.groups.resource)) as [number, ...unknown[]];
    expect(pending[0]).toBe(0);
  });

  it("serves /healthz, /readyz with the eviction policy, and /metrics", async () => {
    const r = replicas[0]!;
    expect((await r.get("/healthz")).status).toBe(200);
    const ready = await r.get("/readyz");
    expect(ready.status).toBe(200);
    expect((ready.body.details as Record<string, string>)["redis-eviction-policy"]).toMatch(/maxmemory-policy/);
    const text = String((await r.get("/metrics")).body.text);
    for (const name of [
      "caracal_revocations_applied_total",
      "caracal_revocation_cache_entries",
      "caracal_revocation_seconds_since_contact",
      "caracal_revocation_seconds_since_seed",
      "caracal_revocation_checks_total",
      "caracal_revocation_keys_repaired_total",
      "caracal_revocation_redis_eviction_possible",
    ]) {
      expect(text).toContain(name);
    }
    expect((await r.get(`/v1/zones/${ZONE}/revocations/bogus/x`)).status).toBe(400);
  });
});
