import { sleep } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";

import { insertRows } from "../export/test-support/fixtures.js";
import { retentionBatchSize } from "./config-schema.js";
import { createRetention } from "./retention.js";
import type { RetentionOptions } from "./retention.js";

const DAY_MS = 86_400_000;
const NOW = Date.UTC(2026, 10, 1);
const logger = pino({ level: "silent" });
const never = new AbortController().signal;

let db: TestDatabase | undefined;
let redis: TestRedis | undefined;
afterEach(async () => {
  await redis?.close();
  await db?.drop();
  db = redis = undefined;
});

async function setup() {
  db = await createMigratedDatabase();
  db.pool.on("error", () => undefined);
  redis = await createTestRedis("retention");
  return { db, redis };
}

function retention(overrides: Partial<RetentionOptions> = {}) {
  return createRetention({
    pool: db!.pool,
    redis: redis!.client,
    logger,
    registry: new Registry(),
    leaseKeyPrefix: redis!.keyPrefix,
    retentionDays: 30,
    batchSize: 7,
    exportEnabled: false,
    now: () => NOW,
    ...overrides,
  });
}

async function ids(zone: string): Promise<string[]> {
  const { rows } = await db!.pool.query("SELECT id FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq", [zone]);
  return rows.map((r) => r.id as string);
}

async function anchor(zone: string): Promise<{ chain_seq: number; hmac_chain: string } | undefined> {
  const { rows } = await db!.pool.query("SELECT chain_seq::int, hmac_chain FROM audit_chain_anchors WHERE zone_id = $1", [zone]);
  return rows[0];
}

/** The remaining rows of a zone continue right after its anchor, with no hole. */
async function expectContiguousAfterAnchor(zone: string): Promise<void> {
  const a = await anchor(zone);
  const { rows } = await db!.pool.query("SELECT chain_seq::int AS s FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq", [zone]);
  const seqs = rows.map((r) => r.s as number);
  expect(seqs[0]).toBe((a?.chain_seq ?? 0) + 1);
  for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBe(seqs[i - 1]! + 1);
}

describe.skipIf(!hasPostgres() || !hasRedis())("retention", () => {
  it("deletes only rows older than the retention, in batches, oldest first, and anchors each zone's chain", async () => {
    const { db } = await setup();
    await insertRows(db.pool, { count: 40, fromMs: NOW - 60 * DAY_MS, spanMs: 10 * DAY_MS, idPrefix: "a-old-", zone: "a" });
    await insertRows(db.pool, { count: 10, fromMs: NOW - 10 * DAY_MS, spanMs: 5 * DAY_MS, idPrefix: "a-new-", zone: "a" });
    await insertRows(db.pool, { count: 3, fromMs: NOW - 5 * DAY_MS, spanMs: DAY_MS, idPrefix: "b-new-", zone: "b" });
    const { rows: before } = await db.pool.query("SELECT chain_seq::int, hmac_chain FROM audit_events WHERE id = 'a-old-40'");

    const r = await retention().runOnce(never);
    expect(r.deleted).toBe(40);
    // 40 rows in batches of 7: six full batches, then one that reaches the young rows
    expect(r.batches).toBe(Math.ceil(40 / 7));
    expect(await ids("a")).toEqual(Array.from({ length: 10 }, (_, i) => `a-new-${i + 1}`));
    expect((await ids("b")).length).toBe(3);
    expect(await anchor("a")).toEqual(before[0]);
    expect(await anchor("b")).toBeUndefined();
    await expectContiguousAfterAnchor("a");
    // a second run finds nothing to do
    expect((await retention().runOnce(never)).deleted).toBe(0);
  });

  it("with export on, deletes only exported rows and stops at the first unexported one of a zone's chain", async () => {
    const { db } = await setup();
    await insertRows(db.pool, { count: 20, fromMs: NOW - 90 * DAY_MS, spanMs: DAY_MS, idPrefix: "x1-", zone: "z", exported: true });
    await insertRows(db.pool, { count: 5, fromMs: NOW - 80 * DAY_MS, spanMs: DAY_MS, idPrefix: "u-", zone: "z", exported: false });
    await insertRows(db.pool, { count: 10, fromMs: NOW - 70 * DAY_MS, spanMs: DAY_MS, idPrefix: "x2-", zone: "z", exported: true });
    const r = await retention({ exportEnabled: true, batchSize: retentionBatchSize(1) }).runOnce(never);
    expect(r.deleted).toBe(20);
    const left = await ids("z");
    expect(left.slice(0, 5)).toEqual(["u-1", "u-2", "u-3", "u-4", "u-5"]);
    expect(left).toHaveLength(15);
    await expectContiguousAfterAnchor("z");
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM audit_events WHERE exported_at IS NULL");
    expect(rows[0].n).toBe(5);

    // once the rows are exported, the rest goes too, except the zone's newest row (the chain continues from it)
    await db.pool.query("UPDATE audit_events SET exported_at = now() WHERE exported_at IS NULL");
    expect((await retention({ exportEnabled: true }).runOnce(never)).deleted).toBe(14);
    expect(await ids("z")).toEqual(["x2-10"]);
    await expectContiguousAfterAnchor("z");
  });

  it("with export off, deletes unexported old rows too", async () => {
    const { db } = await setup();
    await insertRows(db.pool, { count: 12, fromMs: NOW - 90 * DAY_MS, spanMs: DAY_MS, idPrefix: "o-", zone: "z" });
    await insertRows(db.pool, { count: 2, fromMs: NOW - DAY_MS, spanMs: 1000, idPrefix: "n-", zone: "z" });
    expect((await retention({ exportEnabled: false }).runOnce(never)).deleted).toBe(12);
    expect(await ids("z")).toEqual(["n-1", "n-2"]);
  });

  it("runs only on the holder of audit:leader:retention", async () => {
    const { db, redis } = await setup();
    await insertRows(db.pool, { count: 30, fromMs: NOW - 90 * DAY_MS, spanMs: DAY_MS, idPrefix: "o-", zone: "z" });
    await insertRows(db.pool, { count: 1, fromMs: NOW, spanMs: 1, idPrefix: "n-", zone: "z" });
    const registryA = new Registry();
    const registryB = new Registry();
    const stop = new AbortController();
    const a = retention({ registry: registryA, intervalMs: 50, leaseTtlMs: 1_000 }).run(stop.signal);
    const b = retention({ registry: registryB, intervalMs: 50, leaseTtlMs: 1_000, redis: redis.connect() }).run(stop.signal);
    const deadline = Date.now() + 10_000;
    while ((await ids("z")).length > 1 && Date.now() < deadline) await sleep(50);
    expect(await ids("z")).toEqual(["n-1"]);
    const leaders = [registryA, registryB].map(async (r) => (await r.getSingleMetricAsString("caracal_leader")).includes('lease="audit:leader:retention"} 1'));
    expect((await Promise.all(leaders)).filter(Boolean)).toHaveLength(1);
    stop.abort();
    await Promise.all([a, b]);
    expect(await redis.client.exists(`${redis.keyPrefix}audit:leader:retention`)).toBe(0);
  });

  it("keeps a row whose producer clock says it is old but that was ingested within the retention (issue 15.8)", async () => {
    const { db } = await setup();
    // dated 1971, ingested a day before "now": the producer's clock is wrong, the record is fresh
    await insertRows(db.pool, { count: 3, fromMs: Date.UTC(1971, 0, 1), spanMs: 1000, idPrefix: "f-", zone: "f", ingestedAtMs: NOW - DAY_MS });
    await insertRows(db.pool, { count: 3, fromMs: NOW - 40 * DAY_MS, spanMs: 1000, idPrefix: "g-", zone: "f" });
    const result = await retention().runOnce(never);
    expect(result.deleted).toBe(0);
    expect(await ids("f")).toEqual(["f-1", "f-2", "f-3", "g-1", "g-2", "g-3"]);
    // old by both clocks: deleted (the zone's newest row is always kept)
    await db.pool.query("UPDATE audit_events SET ingested_at = occurred_at WHERE zone_id = 'f' AND id LIKE 'f-%'");
    expect((await retention().runOnce(never)).deleted).toBe(5);
  });
});
