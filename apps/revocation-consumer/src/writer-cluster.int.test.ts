/** Key writes on a real three-master Redis Cluster: keys of one batch land on different nodes. */
import { randomUUID } from "node:crypto";

import { redisClusterAvailable, startRedisCluster, type TestRedisCluster } from "@caracal/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { raiseEpochsInRedis, setRevokedKeys } from "./writer.js";

const available = await redisClusterAvailable();

describe.skipIf(!available)("revocation key writes on a Redis Cluster", () => {
  let cluster: TestRedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it("writes every key of a batch whatever its slot, and raises epochs per zone", async () => {
    const client = cluster.connect();
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
});
