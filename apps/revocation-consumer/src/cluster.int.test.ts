/**
 * On a real three-master Redis Cluster: key writes of one batch land on different nodes, and a real
 * revocation-consumer process (REDIS_URL=redis-cluster://...) consumes, writes upstream's keys, raises the
 * epoch, answers from its cache and dead-letters an unsigned entry once.
 */
import { randomBytes, randomUUID } from "node:crypto";

import { StreamPublisher, Topics, signaturePolicy, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, redisClusterAvailable, startRedisCluster, type TestDatabase, type TestRedisCluster } from "@caracal/testkit";
import type { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { startConsumerProcess, waitFor, type ConsumerProcess } from "./test-support/processes.js";
import { raiseEpochsInRedis, setRevokedKeys } from "./writer.js";

const available = await redisClusterAvailable();
const KEY_HEX = randomBytes(32).toString("hex");

describe.skipIf(!available)("revocation on a Redis Cluster", () => {
  let cluster: TestRedisCluster;
  let client: Cluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = cluster.connect();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("writes every key of a batch whatever its slot, and raises epochs per zone", async () => {
    const ids = Array.from({ length: 200 }, () => randomUUID());
    const now = Date.now();
    const written = await setRevokedKeys(client, "", ids.map((anchorId) => ({ anchorId, expiresAtMs: now + 60_000 })), { now });
    expect(written).toBe(ids.length);
    const values = await Promise.all(ids.map((id) => client.get(`caracal:revoked:sessions:${id}`)));
    expect(values.every((v) => v === "1")).toBe(true);
    expect(await setRevokedKeys(client, "", ids.map((anchorId) => ({ anchorId, expiresAtMs: now + 60_000 })), { nx: true, now })).toBe(0);
    const zones = Array.from({ length: 20 }, (_, i) => `zone-${i}-${randomUUID()}`);
    await raiseEpochsInRedis(client, "", new Map(zones.map((z) => [z, 9n])), 60_000);
    await raiseEpochsInRedis(client, "", new Map(zones.map((z) => [z, 3n])), 60_000);
    const epochs = await Promise.all(zones.map((z) => client.get(`caracal:revoked:sessions:delegation-epoch:${z}`)));
    expect(epochs.every((e) => e === "9")).toBe(true);
  }, 60_000);

  describe("a real consumer process", () => {
    let db: TestDatabase;
    let proc: ConsumerProcess | undefined;
    beforeAll(async () => {
      db = await createMigratedDatabase();
    }, 60_000);
    afterAll(async () => {
      await proc?.stop();
      await db?.drop();
    });

    it("consumes, writes keys and epochs, answers from its cache and dead-letters an unsigned entry once", async () => {
      const prefix = `rc-${randomUUID().slice(0, 8)}:`;
      proc = await startConsumerProcess({
        DATABASE_URL: db.url,
        REDIS_URL: cluster.url,
        CARACAL_MODE: "rc",
        STREAMS_HMAC_KEY: KEY_HEX,
        CARACAL_KEY_PREFIX: prefix,
        REVOCATION_BLOCK_MS: "200",
        REVOCATION_MAX_CONTACT_AGE_MS: "3000",
        REVOCATION_RECONCILE_INTERVAL_MS: "500",
        HOSTNAME: "cluster-0",
      });
      const publisher = new StreamPublisher({ redis: client, signing: signaturePolicy({ mode: "rc", keyHex: KEY_HEX }), keyPrefix: prefix });
      const ids = Array.from({ length: 10 }, () => randomUUID());
      for (const id of ids) await publisher.publish(Topics.sessionsRevoke.stream, { zone_id: "zone-c", reason: "t", session_id: id });
      await publisher.publish(Topics.delegationsInvalidate.stream, { event: "edge_revoke", zone_id: "zone-c", epoch: "4" });
      const unsigned = await client.xadd(streamKey(Topics.sessionsRevoke.stream, prefix), "*", "zone_id", "zone-c", "reason", "x", "session_id", randomUUID());
      const check = async (id: string) => (await proc!.get(`/v1/zones/zone-c/revocations/session_id/${id}`)).body.revoked === true;
      await waitFor(async () => (await Promise.all(ids.map(check))).every(Boolean), 15_000, () => `revoked in the cache: ${proc!.output().slice(-2000)}`);
      await waitFor(async () => (await Promise.all(ids.map((id) => client.get(`${prefix}caracal:revoked:sessions:${id}`)))).every((v) => v === "1"), 15_000, () => "keys written");
      await waitFor(async () => (await client.get(`${prefix}caracal:revoked:sessions:delegation-epoch:zone-c`)) === "4", 15_000, () => "epoch raised");
      // a key lost on its node comes back from the table
      await client.del(`${prefix}caracal:revoked:sessions:${ids[0]!}`);
      await waitFor(async () => (await client.get(`${prefix}caracal:revoked:sessions:${ids[0]!}`)) === "1", 15_000, () => "key repaired");
      const dead = streamKey(Topics.sessionsRevoke.deadLetterStream!, prefix);
      await waitFor(async () => (await client.xlen(dead)) >= 1, 15_000, () => "dead letter written");
      const letters = await client.xrange(dead, "-", "+");
      expect(letters.filter(([, f]) => f[f.indexOf("src_id") + 1] === unsigned)).toHaveLength(1);
      expect((await proc.get("/readyz")).status).toBe(200);
    }, 90_000);
  });
});
