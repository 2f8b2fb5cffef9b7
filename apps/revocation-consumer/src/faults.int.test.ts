/**
 * Faults with real processes: a private redis-server that the test kills and restarts (answers go unknown
 * after the bound, /readyz fails, both recover with no restart of the consumer), and TTL expiry.
 */
import { randomBytes, randomUUID } from "node:crypto";

import { Topics, StreamPublisher, signaturePolicy } from "@caracal/streams-core";
import { createMigratedDatabase } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { PrivateRedis, startConsumerProcess, waitFor, type ConsumerProcess } from "./test-support/processes.js";

const KEY_HEX = randomBytes(32).toString("hex");
const ZONE = "zone-f";

describe("revocation consumer faults", () => {
  let db: TestDatabase;
  let privateRedis: PrivateRedis;
  let client: Redis;
  let publisher: StreamPublisher;
  const procs: ConsumerProcess[] = [];

  beforeAll(async () => {
    db = await createMigratedDatabase();
    privateRedis = await PrivateRedis.start();
    client = new Redis(privateRedis.url, { maxRetriesPerRequest: 1 });
    client.on("error", () => undefined);
    publisher = new StreamPublisher({ redis: client, signing: signaturePolicy({ mode: "rc", keyHex: KEY_HEX }), keyPrefix: "f:" });
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    client?.disconnect();
    await privateRedis?.kill();
    await db?.drop();
  });

  const start = async (extra: Record<string, string>) => {
    const p = await startConsumerProcess({
      DATABASE_URL: db.url,
      REDIS_URL: privateRedis.url,
      CARACAL_MODE: "rc",
      STREAMS_HMAC_KEY: KEY_HEX,
      CARACAL_KEY_PREFIX: "f:",
      REVOCATION_BLOCK_MS: "200",
      REVOCATION_MAX_CONTACT_AGE_MS: "1500",
      REVOCATION_RECONCILE_INTERVAL_MS: "300",
      REVOCATION_RESEED_INTERVAL_MS: "500",
      REVOCATION_MAX_SEED_AGE_MS: "10000",
      ...extra,
    });
    procs.push(p);
    return p;
  };
  const check = (p: ConsumerProcess, id: string) => p.get(`/v1/zones/${ZONE}/revocations/session_id/${id}`);

  it("Redis stopped: answers go unknown after the bound and /readyz fails; both recover with no restart", async () => {
    const p = await start({ HOSTNAME: "fault-0" });
    const revoked = randomUUID();
    await publisher.publish(Topics.sessionsRevoke.stream, { zone_id: ZONE, reason: "t", session_id: revoked });
    await waitFor(async () => (await check(p, revoked)).body.revoked === true, 10_000);
    await waitFor(async () => (await client.get(`f:caracal:revoked:sessions:${revoked}`)) === "1", 10_000);

    await privateRedis.kill();
    const other = randomUUID();
    await waitFor(async () => (await check(p, other)).status === 503, 10_000, () => "unknown after the bound");
    const stale = await check(p, other);
    expect(stale.body).toMatchObject({ error: "revocation_state_unknown" });
    expect((await p.get("/readyz")).status).toBe(503);
    // a known revocation still denies while stale
    expect((await check(p, revoked)).body.revoked).toBe(true);

    await privateRedis.restart(); // empty: no persistence
    await waitFor(async () => (await p.get("/readyz")).status === 200, 30_000, () => `ready again: ${p.output().slice(-2000)}`);
    expect((await check(p, other)).body).toMatchObject({ revoked: false });
    // the table is the truth: reconcile rewrites the key the restart lost
    await waitFor(async () => (await client.get(`f:caracal:revoked:sessions:${revoked}`).catch(() => null)) === "1", 10_000, () => "key restored");
    const later = randomUUID();
    await publisher.publish(Topics.sessionsRevoke.stream, { zone_id: ZONE, reason: "t", session_id: later });
    await waitFor(async () => (await check(p, later)).body.revoked === true, 10_000, () => "revocation after recovery");
    await p.stop();
  }, 120_000);

  it("entries expire with the TTL: in the cache, the key and the check", async () => {
    const p = await start({ HOSTNAME: "ttl-0", REVOCATION_TTL_MS: "3000" });
    const id = randomUUID();
    await publisher.publish(Topics.sessionsRevoke.stream, { zone_id: ZONE, reason: "t", session_id: id });
    await waitFor(async () => (await check(p, id)).body.revoked === true, 10_000);
    await waitFor(async () => (await client.exists(`f:caracal:revoked:sessions:${id}`)) === 1, 3_000, () => `key written: ${p.output().slice(-2000)}`);
    const pttl = await client.pttl(`f:caracal:revoked:sessions:${id}`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(3000);
    await waitFor(async () => (await check(p, id)).body.revoked === false, 8_000, () => "expired in the cache");
    expect(await client.exists(`f:caracal:revoked:sessions:${id}`)).toBe(0);
    await p.stop();
  }, 60_000);
});
