import { HeadObjectCommand } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import { RedisLease } from "@caracal/service-kit";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis, startS3 } from "@caracal/testkit";
import type { TestDatabase, TestRedis, TestS3 } from "@caracal/testkit";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";

import { createExporter, objectKey, StaleLeaderError } from "./exporter.js";
import type { ExporterOptions } from "./exporter.js";
import { EXPORT_COLUMNS } from "./parquet-layout.js";
import { dbRows, getBytes, HOUR_MS, insertRows, listKeys, readParquet, s3Client, s3ConfigOf } from "./test-support/fixtures.js";

const logger = pino({ level: "silent" });
/** A fixed past hour: 2026-03-01T00:00Z. */
const H0 = Date.UTC(2026, 2, 1, 0);
const never = new AbortController().signal;

let db: TestDatabase | undefined;
let redis: TestRedis | undefined;
let s3: TestS3 | undefined;
let client: S3Client | undefined;
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  client?.destroy();
  await s3?.stop();
  await redis?.close();
  await db?.drop();
  db = redis = s3 = client = undefined;
});

async function setup() {
  db = await createMigratedDatabase();
  // DROP DATABASE ... WITH (FORCE) at the end terminates idle pooled connections
  db.pool.on("error", () => undefined);
  redis = await createTestRedis("export");
  s3 = await startS3();
  client = s3Client(s3);
  return { db, redis, s3, client };
}

function exporter(overrides: Partial<ExporterOptions> = {}) {
  const e = createExporter({
    pool: db!.pool,
    redis: redis!.client,
    s3Config: s3ConfigOf(s3!),
    logger,
    registry: new Registry(),
    leaseKeyPrefix: redis!.keyPrefix,
    settleMs: 0,
    pageRows: 100,
    ...overrides,
  });
  cleanups.push(() => e.close());
  return e;
}

async function watermark(): Promise<{ exported_through: Date | null; fencing_token: string } | undefined> {
  const { rows } = await db!.pool.query("SELECT exported_through, fencing_token::text FROM audit_export_watermark WHERE name = 's3'");
  return rows[0];
}

async function unexported(fromMs: number, toMs: number): Promise<number> {
  const { rows } = await db!.pool.query(
    "SELECT count(*)::int AS n FROM audit_events WHERE exported_at IS NULL AND occurred_at >= to_timestamp($1::float8/1000) AND occurred_at < to_timestamp($2::float8/1000)",
    [fromMs, toMs],
  );
  return rows[0].n as number;
}

describe.skipIf(!hasPostgres() || !hasRedis())("S3 Parquet export", () => {
  it("writes one ZSTD Parquet file per complete hour that hyparquet reads back equal to the rows", async () => {
    const { db, s3, client } = await setup();
    await insertRows(db.pool, { count: 250, fromMs: H0, spanMs: HOUR_MS, idPrefix: "a-" });
    await insertRows(db.pool, { count: 130, fromMs: H0 + HOUR_MS, spanMs: HOUR_MS, idPrefix: "b-" });
    // hour 2 is empty; hour 3 has rows; hour 4 is not complete yet at `now`
    await insertRows(db.pool, { count: 40, fromMs: H0 + 3 * HOUR_MS, spanMs: HOUR_MS, idPrefix: "c-" });
    await insertRows(db.pool, { count: 5, fromMs: H0 + 4 * HOUR_MS, spanMs: 60_000, idPrefix: "d-" });
    const exportTime = H0 + 4 * HOUR_MS + 30 * 60_000;
    const result = await exporter({ now: () => exportTime }).exportPass({ signal: never, fencingToken: 1 });
    expect(result).toMatchObject({ files: 3, rows: 420 });

    const keys = await listKeys(client, s3.bucket);
    expect(keys).toEqual(["audit/2026/03/01/2026-03-01T00.parquet", "audit/2026/03/01/2026-03-01T01.parquet", "audit/2026/03/01/2026-03-01T03.parquet"]);
    for (const [i, hour] of [0, 1, 3].entries()) {
      const from = H0 + hour * HOUR_MS;
      const { rows, metadata } = await readParquet(await getBytes(client, s3.bucket, keys[i]!));
      const expected = await dbRows(db.pool, from, from + HOUR_MS);
      expect(rows.length).toBeGreaterThan(0);
      expect(rows).toEqual(expected);
      // every audit column, ZSTD, UTC-adjusted microsecond timestamps
      expect(metadata.schema.slice(1).map((s) => s.name)).toEqual(EXPORT_COLUMNS.map((c) => c.name));
      for (const rg of metadata.row_groups) for (const c of rg.columns) expect(c.meta_data?.codec).toBe("ZSTD");
      expect(metadata.row_groups.length).toBe(Math.ceil(rows.length / 100));
      const occurred = metadata.schema.find((s) => s.name === "occurred_at");
      expect(occurred?.logical_type).toEqual({ type: "TIMESTAMP", isAdjustedToUTC: true, unit: "MICROS" });
      // exported_at in the file is the time written to the rows
      expect(new Set(rows.map((r) => r.exported_at))).toEqual(new Set([BigInt(exportTime) * 1000n]));
    }
    expect(await unexported(H0, H0 + 4 * HOUR_MS)).toBe(0);
    expect(await unexported(H0 + 4 * HOUR_MS, H0 + 5 * HOUR_MS)).toBe(5);
    expect((await watermark())?.exported_through?.getTime()).toBe(H0 + 4 * HOUR_MS);
  });

  it("catches up after downtime, exporting every missed hour exactly once, and late rows in a file of their own", async () => {
    const { db, s3, client } = await setup();
    for (let h = 0; h < 6; h++) await insertRows(db.pool, { count: 20, fromMs: H0 + h * HOUR_MS, spanMs: HOUR_MS, idPrefix: `h${h}-` });
    const settleMs = 5 * 60_000;
    let clock = H0 + 2 * HOUR_MS + settleMs; // hours 0 and 1 are complete and settled
    const e = exporter({ now: () => clock, settleMs });
    expect((await e.exportPass({ signal: never, fencingToken: 1 })).files).toBe(2);
    // a pass just before hour 2 settles exports nothing
    clock = H0 + 3 * HOUR_MS + settleMs - 1;
    expect((await e.exportPass({ signal: never, fencingToken: 1 })).files).toBe(0);
    // downtime: the next pass runs 9 hours later
    clock = H0 + 12 * HOUR_MS;
    expect((await e.exportPass({ signal: never, fencingToken: 1 })).files).toBe(4);
    expect((await e.exportPass({ signal: never, fencingToken: 1 })).files).toBe(0);
    const keys = await listKeys(client, s3.bucket);
    expect(keys).toEqual([0, 1, 2, 3, 4, 5].map((h) => objectKey("audit/", new Date(H0 + h * HOUR_MS))));
    for (const [h, key] of keys.entries()) {
      const { rows } = await readParquet(await getBytes(client, s3.bucket, key));
      expect(rows.map((r) => r.id).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `h${h}-${i + 1}`).sort());
    }
    // the watermark stops after the last hour with rows: later hours are still open for rows
    expect((await watermark())?.exported_through?.getTime()).toBe(H0 + 6 * HOUR_MS);

    // a row of hour 1 ingested after hour 1 was exported
    await insertRows(db.pool, { count: 1, fromMs: H0 + HOUR_MS + 1000, spanMs: 1, idPrefix: "late-" });
    const r = await e.exportPass({ signal: never, fencingToken: 1 });
    expect(r).toMatchObject({ files: 1, rows: 1 });
    const lateKeys = (await listKeys(client, s3.bucket)).filter((k) => k.includes(".late-"));
    expect(lateKeys).toHaveLength(1);
    expect(lateKeys[0]).toMatch(/^audit\/2026\/03\/01\/2026-03-01T01\.late-\d+\.parquet$/);
    const { rows } = await readParquet(await getBytes(client, s3.bucket, lateKeys[0]!));
    expect(rows.map((x) => x.id)).toEqual(["late-1"]);
    expect(await unexported(H0, H0 + 12 * HOUR_MS)).toBe(0);
    expect((await e.exportPass({ signal: never, fencingToken: 1 })).files).toBe(0);
  });

  it("does not rewrite an object a dead leader left behind, and still marks its rows", async () => {
    const { db, s3, client } = await setup();
    await insertRows(db.pool, { count: 30, fromMs: H0, spanMs: HOUR_MS, idPrefix: "a-" });
    const now = () => H0 + 2 * HOUR_MS;
    const dying = exporter({
      now,
      beforeCommit: () => Promise.reject(new Error("process died after the upload")),
    });
    await expect(dying.exportPass({ signal: never, fencingToken: 1 })).rejects.toThrow(/process died/);
    const key = objectKey("audit/", new Date(H0));
    const before = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    expect(before.Metadata?.["fencing-token"]).toBe("1");
    expect(await unexported(H0, H0 + HOUR_MS)).toBe(30);
    expect((await watermark())?.exported_through).toBeNull();

    const r = await exporter({ now }).exportPass({ signal: never, fencingToken: 2 });
    expect(r.files).toBe(0);
    const after = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    expect(after.ETag).toBe(before.ETag);
    expect(after.Metadata?.["fencing-token"]).toBe("1");
    expect(await listKeys(client, s3.bucket)).toEqual([key]);
    expect(await unexported(H0, H0 + HOUR_MS)).toBe(0);
    expect(await watermark()).toMatchObject({ fencing_token: "2" });
    expect((await watermark())?.exported_through?.getTime()).toBe(H0 + HOUR_MS);
  });

  it("leaves rows unmarked when an existing object's row count differs, then archives them as late rows", async () => {
    const { db, s3, client } = await setup();
    await insertRows(db.pool, { count: 10, fromMs: H0, spanMs: HOUR_MS, idPrefix: "a-" });
    const now = () => H0 + 2 * HOUR_MS;
    await expect(exporter({ now, beforeCommit: () => Promise.reject(new Error("died")) }).exportPass({ signal: never, fencingToken: 1 })).rejects.toThrow();
    // two more rows of that hour arrive before the next leader runs
    await insertRows(db.pool, { count: 2, fromMs: H0 + 10_000, spanMs: 1000, idPrefix: "b-" });
    await exporter({ now }).exportPass({ signal: never, fencingToken: 2 });
    const keys = await listKeys(client, s3.bucket);
    expect(keys).toHaveLength(2);
    const late = keys.find((k) => k.includes(".late-"));
    expect(late).toBeDefined();
    const { rows } = await readParquet(await getBytes(client, s3.bucket, late!));
    // every row of the hour is in the late file, since the first file's content cannot be trusted to hold them
    expect(rows).toHaveLength(12);
    expect(await unexported(H0, H0 + HOUR_MS)).toBe(0);
  });

  it("a stale leader cannot advance the watermark or set exported_at", async () => {
    const { db, redis, s3, client } = await setup();
    await insertRows(db.pool, { count: 50, fromMs: H0, spanMs: HOUR_MS, idPrefix: "a-" });
    await insertRows(db.pool, { count: 50, fromMs: H0 + HOUR_MS, spanMs: HOUR_MS, idPrefix: "b-" });
    const leaseA = new RedisLease({ redis: redis.client, key: "audit:leader:export", keyPrefix: redis.keyPrefix, ttlMs: 5_000 });
    const leaseB = new RedisLease({ redis: redis.connect(), key: "audit:leader:export", keyPrefix: redis.keyPrefix, ttlMs: 5_000 });
    expect(await leaseA.tryAcquire()).toBe(true);
    const tokenA = leaseA.fencingToken!;

    // A uploads hour 0 and pauses before committing; meanwhile its lease is lost and B takes over
    let resumeA!: () => void;
    const paused = new Promise<void>((resolve) => {
      resumeA = resolve;
    });
    let aPaused!: () => void;
    const aIsPaused = new Promise<void>((resolve) => {
      aPaused = resolve;
    });
    const timeA = H0 + 3 * HOUR_MS;
    const passA = exporter({
      now: () => timeA,
      beforeCommit: async () => {
        aPaused();
        await paused;
      },
    }).exportPass({ signal: never, fencingToken: tokenA }); // A does not notice the loss (a GC pause)
    await aIsPaused;
    await redis.client.del(`${redis.keyPrefix}audit:leader:export`);
    expect(await leaseB.tryAcquire()).toBe(true);
    const tokenB = leaseB.fencingToken!;
    expect(tokenB).toBeGreaterThan(tokenA);
    const timeB = H0 + 5 * HOUR_MS;
    const rB = await exporter({ now: () => timeB }).exportPass({ signal: never, fencingToken: tokenB });
    expect(rB.hours).toBe(2);
    resumeA();
    await expect(passA).rejects.toThrow();

    const { rows } = await db.pool.query("SELECT DISTINCT exported_at FROM audit_events");
    expect(rows.map((r) => (r.exported_at as Date).getTime())).toEqual([timeB]);
    expect(await watermark()).toMatchObject({ fencing_token: String(tokenB) });
    expect((await watermark())?.exported_through?.getTime()).toBe(H0 + 2 * HOUR_MS);

    // a later pass with the old token is refused at once and changes nothing
    await insertRows(db.pool, { count: 5, fromMs: H0 + 2 * HOUR_MS, spanMs: HOUR_MS, idPrefix: "c-" });
    await expect(exporter({ now: () => timeA }).exportPass({ signal: never, fencingToken: tokenA })).rejects.toBeInstanceOf(StaleLeaderError);
    expect(await unexported(H0 + 2 * HOUR_MS, H0 + 3 * HOUR_MS)).toBe(5);
    expect((await watermark())?.exported_through?.getTime()).toBe(H0 + 2 * HOUR_MS);
    expect(await listKeys(client, s3.bucket)).toEqual([objectKey("audit/", new Date(H0)), objectKey("audit/", new Date(H0 + HOUR_MS))]);
    await leaseB.release();
  });

  it("a leader whose lease is lost before its commit rolls the hour back", async () => {
    const { db } = await setup();
    await insertRows(db.pool, { count: 25, fromMs: H0, spanMs: HOUR_MS, idPrefix: "a-" });
    const tenure = new AbortController();
    const pass = exporter({
      now: () => H0 + 2 * HOUR_MS,
      beforeCommit: async () => {
        tenure.abort();
      },
    }).exportPass({ signal: tenure.signal, fencingToken: 1 });
    await expect(pass).rejects.toBeInstanceOf(StaleLeaderError);
    expect(await unexported(H0, H0 + HOUR_MS)).toBe(25);
    expect((await watermark())?.exported_through).toBeNull();
  });

  it("streams an hour in row groups of one fetch each", async () => {
    const { db, s3, client } = await setup();
    await insertRows(db.pool, { count: 5_500, fromMs: H0, spanMs: HOUR_MS, idPrefix: "big-", payloadBytes: 64 });
    const r = await exporter({ now: () => H0 + 2 * HOUR_MS, pageRows: 1_000 }).exportPass({ signal: never, fencingToken: 1 });
    expect(r.rows).toBe(5_500);
    const { rows, metadata } = await readParquet(await getBytes(client, s3.bucket, objectKey("audit/", new Date(H0))));
    expect(metadata.row_groups.map((g) => Number(g.num_rows))).toEqual([1000, 1000, 1000, 1000, 1000, 500]);
    expect(rows).toEqual(await dbRows(db.pool, H0, H0 + HOUR_MS));
  });
});
