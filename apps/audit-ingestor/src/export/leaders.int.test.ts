import { sleep } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis, startS3 } from "@caracal/testkit";
import { pino } from "pino";
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";

import { runLeaders } from "./leaders.js";
import { HOUR_MS, insertRows, listKeys, s3Client, s3ConfigOf } from "./test-support/fixtures.js";

describe.skipIf(!hasPostgres() || !hasRedis())("runLeaders", () => {
  it("exports and applies retention as leader of both leases, and releases them on stop", async () => {
    const db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    const redis = await createTestRedis("leaders");
    const s3 = await startS3();
    const client = s3Client(s3);
    try {
      // two past hours of rows, far older than a 1-day retention
      const from = Math.floor(Date.now() / HOUR_MS) * HOUR_MS - 30 * 24 * HOUR_MS;
      await insertRows(db.pool, { count: 20, fromMs: from, spanMs: 2 * HOUR_MS, idPrefix: "o-", zone: "z" });
      await insertRows(db.pool, { count: 1, fromMs: Date.now() - 1000, spanMs: 1, idPrefix: "n-", zone: "z" });
      const registry = new Registry();
      const stop = new AbortController();
      const running = runLeaders(
        {
          pool: db.pool,
          redis: redis.client,
          logger: pino({ level: process.env.TEST_LOG ?? "silent" }),
          registry,
          keyPrefix: redis.keyPrefix,
          leaseTtlMs: 1_000,
          export: { s3Config: s3ConfigOf(s3), intervalMs: 50, settleMs: 0 },
          retention: { days: 1, intervalMs: 50, maxDeliveries: 1 },
        },
        stop.signal,
      );
      const deadline = Date.now() + 15_000;
      for (;;) {
        const { rows } = await db.pool.query("SELECT id FROM audit_events ORDER BY chain_seq");
        if (rows.length === 1 || Date.now() > deadline) break;
        await sleep(50);
      }
      const gauge = await registry.getSingleMetricAsString("caracal_leader");
      expect(gauge).toContain('lease="audit:leader:export"} 1');
      expect(gauge).toContain('lease="audit:leader:retention"} 1');
      stop.abort();
      await running;
      // the old rows went to S3 before retention deleted them; only the zone's newest row is left
      expect((await listKeys(client, s3.bucket)).length).toBeGreaterThanOrEqual(2);
      const { rows } = await db.pool.query("SELECT id FROM audit_events");
      expect(rows.map((r) => r.id)).toEqual(["n-1"]);
      expect(await redis.client.exists(`${redis.keyPrefix}audit:leader:export`, `${redis.keyPrefix}audit:leader:retention`)).toBe(0);
      expect(await registry.getSingleMetricAsString("caracal_leader")).not.toContain("} 1");
    } finally {
      client.destroy();
      await s3.stop();
      await redis.close();
      await db.drop();
    }
  });
});
