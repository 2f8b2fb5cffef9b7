/** Two real policy invalidator processes and the real outbox dispatcher on a three-master Redis Cluster. */
import { existsSync } from "node:fs";

import { activatePolicySetVersion } from "@caracal/outbox";
import { createMigratedDatabase, hasPostgres, redisClusterAvailable, startRedisCluster } from "@caracal/testkit";
import { describe, expect, it } from "vitest";

import type { Child } from "./test-support/processes.js";
import { DISPATCHER_MAIN, POLICY_MAIN, addSetVersion, inTx, seedZone, spawnService, waitFor } from "./test-support/processes.js";

const available = hasPostgres() && (await redisClusterAvailable());

describe.skipIf(!available)("policy invalidator on a Redis Cluster", () => {
  it("an activation reaches both replicas through the dispatcher, the streams spread over the nodes", async () => {
    for (const main of [POLICY_MAIN, DISPATCHER_MAIN]) if (!existsSync(main)) throw new Error(`${main} is missing: build first`);
    const cluster = await startRedisCluster();
    const db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    const children: Child[] = [];
    try {
      const zone = await seedZone(db.pool, "zc", 2);
      await addSetVersion(db.pool, zone.setId, "zc-v1", 1, zone.versionIds);
      await inTx(db.pool, (c) => activatePolicySetVersion(c, "zc", zone.setId, "zc-v1"));
      const env = { DATABASE_URL: db.url, REDIS_URL: cluster.url };
      for (let i = 0; i < 2; i++) children.push(spawnService(POLICY_MAIN, /policy invalidator running/, { ...env, POLICY_RECONCILE_INTERVAL_MS: "600000" }));
      children.push(spawnService(DISPATCHER_MAIN, /outbox dispatcher running/, { ...env, CARACAL_OUTBOX_POLL_MS: "50" }));
      const ports = await Promise.all(children.slice(0, 2).map((c) => c.port));
      await children[2]!.port;
      const etag = async (port: number) => (await fetch(`http://127.0.0.1:${port}/bundles/zc.tar.gz`)).headers.get("etag");
      for (const p of ports) await waitFor(async () => (await etag(p))?.startsWith('"zc-v1.'), 30_000, `replica ${p} serves v1`);
      await addSetVersion(db.pool, zone.setId, "zc-v2", 2, zone.versionIds.slice(0, 1));
      await inTx(db.pool, (c) => activatePolicySetVersion(c, "zc", zone.setId, "zc-v2"));
      for (const p of ports) await waitFor(async () => (await etag(p))?.startsWith('"zc-v2.'), 30_000, `replica ${p} serves v2`);
      expect(new Set(await Promise.all(ports.map(etag))).size).toBe(1);
    } finally {
      for (const c of children) if (c.process.exitCode === null) c.process.kill("SIGTERM");
      await Promise.all(children.map((c) => c.exited));
      await db.drop();
      await cluster.stop();
    }
  }, 120_000);
});
