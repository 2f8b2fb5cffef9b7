import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { HeadObjectCommand } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import { sleep } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis, startS3 } from "@caracal/testkit";
import type { TestDatabase, TestRedis, TestS3 } from "@caracal/testkit";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";

import { createExporter, objectKey } from "./exporter.js";
import { getBytes, HOUR_MS, insertRows, listKeys, readParquet, s3Client, s3ConfigOf } from "./test-support/fixtures.js";

const childScript = fileURLToPath(new URL("./test-support/export-leader-child.mjs", import.meta.url));
const builtExporter = fileURLToPath(new URL("../../dist/export/exporter.js", import.meta.url));
const H0 = Date.UTC(2026, 2, 1, 0);
const LEASE_TTL_MS = 1_000;

let db: TestDatabase | undefined;
let redis: TestRedis | undefined;
let s3: TestS3 | undefined;
let client: S3Client | undefined;
let child: ChildProcess | undefined;
afterEach(async () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  client?.destroy();
  await s3?.stop();
  await redis?.close();
  await db?.drop();
  db = redis = s3 = client = child = undefined;
});

function waitForLine(proc: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`child said nothing matching ${pattern} in time; stderr: ${err}`)), timeoutMs);
    proc.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = out.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
    proc.once("exit", (code) => reject(new Error(`child exited with ${code}; stderr: ${err}`)));
  });
}

describe.skipIf(!hasPostgres() || !hasRedis())("export leader killed", () => {
  it("another replica takes over after the lease TTL: no duplicate object, no hour missing, watermark correct", async () => {
    expect(existsSync(builtExporter), "build the app first (pnpm --filter @caracal/audit-ingestor build)").toBe(true);
    db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    redis = await createTestRedis("takeover");
    s3 = await startS3();
    client = s3Client(s3);
    for (let h = 0; h < 4; h++) await insertRows(db.pool, { count: 120, fromMs: H0 + h * HOUR_MS, spanMs: HOUR_MS, idPrefix: `h${h}-` });
    const pauseHour = new Date(H0 + HOUR_MS);

    child = spawn(process.execPath, [childScript], {
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        REDIS_URL: redis.url,
        KEY_PREFIX: redis.keyPrefix,
        S3_CONFIG: JSON.stringify(s3ConfigOf(s3)),
        LEASE_TTL_MS: String(LEASE_TTL_MS),
        PAUSE_HOUR: pauseHour.toISOString(),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    await waitForLine(child, /paused \S+/, 30_000);
    const leaseKey = `${redis.keyPrefix}audit:leader:export`;
    const childToken = Number(await redis.client.get(`${leaseKey}:fence`));
    const childOwner = await redis.client.get(leaseKey);
    expect(childOwner).not.toBeNull();
    // the child committed hour 0, uploaded hour 1 and hangs before committing it
    const hour1 = objectKey("audit/", pauseHour);
    expect(await listKeys(client, s3.bucket)).toEqual([objectKey("audit/", new Date(H0)), hour1]);
    const hour1Before = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: hour1 }));
    const { rows: wm1 } = await db.pool.query("SELECT exported_through FROM audit_export_watermark");
    expect((wm1[0]?.exported_through as Date).getTime()).toBe(H0 + HOUR_MS);

    // a second replica is already competing while the child holds the lease
    const registry = new Registry();
    const replica = createExporter({
      pool: db.pool,
      redis: redis.connect(),
      s3Config: s3ConfigOf(s3),
      logger: pino({ level: "silent" }),
      registry,
      leaseKeyPrefix: redis.keyPrefix,
      leaseTtlMs: LEASE_TTL_MS,
      intervalMs: 100,
      settleMs: 0,
      pageRows: 50,
    });
    const stop = new AbortController();
    const running = replica.run(stop.signal);
    await sleep(3 * LEASE_TTL_MS);
    expect(await redis.client.get(leaseKey)).toBe(childOwner); // the live child keeps renewing

    child.kill("SIGKILL");
    const killedAt = Date.now();
    const deadline = killedAt + 20_000;
    for (;;) {
      const { rows } = await db.pool.query("SELECT exported_through FROM audit_export_watermark");
      if ((rows[0]?.exported_through as Date | null)?.getTime() === H0 + 4 * HOUR_MS) break;
      if (Date.now() > deadline) throw new Error("the replica did not take over");
      await sleep(50);
    }
    const tookOverAfterMs = Date.now() - killedAt;
    stop.abort();
    await running;
    replica.close();

    // each hour exactly once, no late-row duplicates; hour 1 not rewritten (still the child's object)
    const keys = await listKeys(client, s3.bucket);
    expect(keys).toEqual([0, 1, 2, 3].map((h) => objectKey("audit/", new Date(H0 + h * HOUR_MS))));
    const hour1After = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: hour1 }));
    expect(hour1After.ETag).toBe(hour1Before.ETag);
    expect(hour1After.Metadata?.["fencing-token"]).toBe(String(childToken));
    for (const [h, key] of keys.entries()) {
      const { rows } = await readParquet(await getBytes(client, s3.bucket, key));
      expect(rows.map((r) => r.id).sort()).toEqual(Array.from({ length: 120 }, (_, i) => `h${h}-${i + 1}`).sort());
    }
    const { rows: left } = await db.pool.query("SELECT count(*)::int AS n FROM audit_events WHERE exported_at IS NULL");
    expect(left[0].n).toBe(0);
    const { rows: wm } = await db.pool.query("SELECT fencing_token::int AS t FROM audit_export_watermark");
    expect(wm[0].t).toBeGreaterThan(childToken);
    // the dead leader's key had to expire first (its last renewal was at most TTL/3 before the kill)
    expect(tookOverAfterMs).toBeGreaterThanOrEqual(LEASE_TTL_MS / 2);
    expect(await registry.getSingleMetricAsString("caracal_leader")).toContain('lease="audit:leader:export"} 0');
  }, 60_000);
});
