/**
 * Adopting an upstream Caracal database (issue 16, WIRE §6): its partitioned audit_events, with its rows,
 * partitions, DEFAULT partition, row-level security and export watermark, is kept; this project's chain
 * starts in each zone after upstream's rows; ingest, verify and retention go on.
 */
import { readFileSync } from "node:fs";

import { createPool, migrateDatabase } from "@caracal/db";
import { createEmptyDatabase, createTestRedis, hasPostgres, hasRedis, startS3 } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { createExporter } from "../export/exporter.js";
import { getBytes, listKeys, readParquet, s3Client, s3ConfigOf } from "../export/test-support/fixtures.js";
import { createRetention } from "../retention/retention.js";
import { silentLogger } from "../test-support/harness.js";
import { ledgerInput, makeEvent, TEST_AUDIT_KEY } from "../test-support/events.js";
import { verifyZone } from "../verify/ledger-verify.js";
import { LedgerWriter } from "./writer.js";

const UPSTREAM_SCHEMA = readFileSync(new URL("../test-support/upstream-audit-schema.sql", import.meta.url), "utf8");
const DAY_MS = 86_400_000;

describe.skipIf(!hasPostgres() || !hasRedis())("adopting an upstream audit database", () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createEmptyDatabase();
    db.pool.on("error", () => undefined);
    await db.pool.query(UPSTREAM_SCHEMA);
    // upstream's monthly partitions: two old months, and this month plus the next three as its worker keeps them
    for (const month of ["2025-01-01", "2025-02-01"]) await db.pool.query("SELECT audit_partition_ensure($1::date)", [month]);
    const now = new Date();
    for (let m = 0; m <= 3; m++) {
      await db.pool.query("SELECT audit_partition_ensure($1::date)", [new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + m, 1)).toISOString().slice(0, 10)]);
    }
    // Upstream's rows: zone z1 seq 1-3 in January 2025, 4-5 in February 2025; zone z2 seq 1 in January and
    // seq 2 this month; zone z3 (no chain_seq, as a row written before upstream's rehash) in the DEFAULT
    // partition (dated 2019, no partition there). Ingested when they occurred.
    await db.pool.query(
      `INSERT INTO audit_events (id, zone_id, event_type, decision, determining_policies_json, diagnostics_json, metadata_json,
                                 occurred_at, ingested_at, content_sha256, chain_hmac, chain_seq) VALUES
       ('up-1', 'z1', 'sts.exchange', 'allow', '[]', '[]', '{"session_id":"s1"}', '2025-01-03T10:00:00Z', '2025-01-03T10:00:01Z', 'c1', 'h1', 1),
       ('up-2', 'z1', 'sts.exchange', 'deny', NULL, NULL, NULL, '2025-01-04T10:00:00Z', '2025-01-04T10:00:01Z', 'c2', 'h2', 2),
       ('up-3', 'z1', 'sts.step_up', 'pending', NULL, NULL, NULL, '2025-01-05T10:00:00Z', '2025-01-05T10:00:01Z', 'c3', 'h3', 3),
       ('up-4', 'z1', 'sts.exchange', 'allow', '[]', '[]', NULL, '2025-02-03T10:00:00Z', '2025-02-03T10:00:01Z', 'c4', 'h4', 4),
       ('up-5', 'z1', 'sts.exchange', 'allow', '[]', '[]', NULL, '2025-02-04T10:00:00Z', '2025-02-04T10:00:01Z', 'c5', 'h5', 5),
       ('up-6', 'z2', 'gateway.call', 'allow', '[]', '[]', NULL, '2025-01-06T10:00:00Z', '2025-01-06T10:00:01Z', 'c6', 'h6', 1),
       ('up-7', 'z2', 'gateway.call', 'allow', '[]', '[]', NULL, now() - interval '1 minute', now(), 'c7', 'h7', 2),
       ('up-8', 'z3', 'api.control', 'approved', NULL, NULL, NULL, '2019-06-01T00:00:00Z', '2019-06-01T00:00:01Z', NULL, NULL, NULL)`,
    );
    await db.pool.query("INSERT INTO audit_export_watermark (name, last_exported_hour) VALUES ('parquet-hourly', '2025-02-04T10:00:00Z')");
  });
  afterEach(async () => {
    await db.drop();
  });

  const upstreamColumns = "id, zone_id, event_type, decision, determining_policies_json, diagnostics_json, metadata_json, occurred_at, ingested_at, content_sha256, chain_hmac, chain_seq, tableoid::regclass::text AS partition";
  const rowsOf = async (zone: string) =>
    (await db.pool.query<{ id: string; chain_seq: string; hmac_chain: string | null }>("SELECT id, chain_seq, hmac_chain FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq", [zone])).rows;

  it("keeps every upstream row and partition, starts this project's chain after them, and ingests and verifies from there", async () => {
    const before = (await db.pool.query(`SELECT ${upstreamColumns} FROM audit_events ORDER BY id`)).rows;
    await migrateDatabase(db.url);
    await migrateDatabase(db.url); // idempotent

    const after = (await db.pool.query(`SELECT ${upstreamColumns} FROM audit_events ORDER BY id`)).rows;
    expect(after).toEqual(before);
    const kind = await db.pool.query("SELECT relkind, relrowsecurity FROM pg_class WHERE oid = 'audit_events'::regclass");
    expect(kind.rows[0]).toEqual({ relkind: "p", relrowsecurity: true });
    // rows present at adoption count as exported by upstream; the export goes on after upstream's watermark
    const exported = await db.pool.query("SELECT count(*)::int AS n FROM audit_events WHERE exported_at = '-infinity'");
    expect(exported.rows[0].n).toBe(8);
    const watermark = await db.pool.query("SELECT exported_through FROM audit_export_watermark WHERE name = 's3'");
    expect((watermark.rows[0].exported_through as Date).toISOString()).toBe("2025-02-04T11:00:00.000Z");

    const adoptions = await db.pool.query("SELECT zone_id, adopted_through_seq::int AS seq, rows_before::int AS n FROM audit_adoptions ORDER BY zone_id");
    expect(adoptions.rows).toEqual([
      { zone_id: "z1", seq: 5, n: 5 },
      { zone_id: "z2", seq: 2, n: 2 },
      { zone_id: "z3", seq: 0, n: 1 },
    ]);
    const anchors = await db.pool.query("SELECT zone_id, chain_seq::int AS seq, hmac_chain FROM audit_chain_anchors ORDER BY zone_id");
    expect(anchors.rows).toEqual([
      { zone_id: "z1", seq: 5, hmac_chain: "" },
      { zone_id: "z2", seq: 2, hmac_chain: "" },
      { zone_id: "z3", seq: 0, hmac_chain: "" },
    ]);

    // Ingest goes on, through a pool as the services make it (row-level security: all zones).
    const pool = createPool(db.url, { max: 2 });
    try {
      const writer = new LedgerWriter({ pool, auditKey: TEST_AUDIT_KEY });
      const fresh = [
        makeEvent({ zone_id: "z1", occurred_at: new Date().toISOString() }),
        makeEvent({ zone_id: "z1", occurred_at: "2025-01-10T00:00:00Z" }), // late, into January's partition
        makeEvent({ zone_id: "z3", occurred_at: "2019-06-02T00:00:00Z" }), // into the DEFAULT partition
        makeEvent({ zone_id: "z4", occurred_at: new Date().toISOString() }),
      ];
      const result = await writer.writeBatch(fresh.map((e) => ledgerInput(e)));
      expect(result.inserted).toBe(4);
      expect((await rowsOf("z1")).map((r) => [r.id, Number(r.chain_seq), r.hmac_chain === null])).toEqual([
        ["up-1", 1, true],
        ["up-2", 2, true],
        ["up-3", 3, true],
        ["up-4", 4, true],
        ["up-5", 5, true],
        [fresh[0]!.id, 6, false],
        [fresh[1]!.id, 7, false],
      ]);
      // z3's upstream row has no chain_seq: this project's chain there starts at 1
      expect((await rowsOf("z3")).map((r) => (r.chain_seq === null ? null : Number(r.chain_seq)))).toEqual([1, null]);

      // A redelivered upstream-era event is a duplicate (its stored hash is upstream's); the same id as a
      // row of this project with another occurred_at is a replay with other content.
      const redelivered = makeEvent({ id: "up-2", zone_id: "z1", occurred_at: "2025-01-04T10:00:00Z" });
      const replay = makeEvent({ id: fresh[0]!.id, zone_id: "z1", occurred_at: "2025-01-11T00:00:00Z" });
      const again = await writer.writeBatch([ledgerInput(redelivered), ledgerInput(replay)]);
      expect(again.inserted).toBe(0);
      expect(again.duplicates).toBe(1);
      expect([...again.rejected.values()].map((r) => r.reason)).toEqual(["tamper_on_replay"]);

      const verify = (zone: string) => verifyZone(zone, {}, { pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 });
      for (const zone of ["z1", "z2", "z3", "z4"]) expect((await verify(zone)).breaks, zone).toEqual([]);
      expect((await verify("z1")).rowsChecked).toBe(2);
      // the sweeper's form (from the first row of a window, below the adoption point) checks the same rows
      expect((await verifyZone("z1", { fromSeq: 2 }, { pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 })).breaks).toEqual([]);
      // and a change to a row of this project is still found
      await db.pool.query("UPDATE audit_events SET decision = 'deny' WHERE id = $1", [fresh[1]!.id]);
      expect((await verify("z1")).breaks.map((b) => b.kind)).toEqual(["changed"]);
    } finally {
      await pool.end();
    }
  });

  it("retention drops whole partitions once every row is old enough and part of a chain prefix, and deletes the rest row by row", async () => {
    await migrateDatabase(db.url);
    const pool = createPool(db.url, { max: 2 });
    try {
      const writer = new LedgerWriter({ pool, auditKey: TEST_AUDIT_KEY });
      // z2 gets a late January event now: January's partition interleaves with z2's chain until it is old
      await writer.writeBatch([ledgerInput(makeEvent({ zone_id: "z1", occurred_at: new Date().toISOString() })), ledgerInput(makeEvent({ zone_id: "z2", occurred_at: "2025-01-20T00:00:00Z" }))]);
      const registry = new Registry();
      const retentionAt = (now: number) =>
        createRetention({ pool, redis: undefined as never, logger: silentLogger, registry, retentionDays: 30, batchSize: 100, exportEnabled: false, now: () => now });

      const first = await retentionAt(Date.now()).runOnce(new AbortController().signal);
      // February (z1 4-5) holds no zone's newest row and no interleaving: dropped. January holds z2's late
      // event, ingested just now: kept. z3's 2019 row in the DEFAULT partition has no chain_seq: kept.
      expect(first.droppedPartitions.map((n) => n.replace(/"/g, ""))).toEqual(["audit_events_y2025m02"]);
      const partitions = await pool.query("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1");
      expect(partitions.rows.map((r) => r.relname)).toContain("audit_events_y2025m01");
      expect(partitions.rows.map((r) => r.relname)).not.toContain("audit_events_y2025m02");
      expect(partitions.rows.map((r) => r.relname)).toContain("audit_events_default");
      // January's old z1 rows 1-3 sit below February's: they went row by row (with February's rows, whose
      // emptied partition the second pass dropped)
      expect((await rowsOf("z1")).map((r) => r.id).filter((id) => id.startsWith("up-"))).toEqual([]);
      const anchors = await pool.query("SELECT zone_id, chain_seq::int AS seq FROM audit_chain_anchors ORDER BY zone_id");
      expect(anchors.rows).toEqual([
        { zone_id: "z1", seq: 5 },
        { zone_id: "z2", seq: 2 },
        { zone_id: "z3", seq: 0 },
      ]);
      for (const zone of ["z1", "z2"]) expect((await verifyZone(zone, {}, { pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 })).breaks, zone).toEqual([]);

      // A year on, with a newer z2 event elsewhere, January's rows are all old and below z2's newest: the
      // partition goes (after the row pass removed z2's older row of this month that interleaved with it).
      await writer.writeBatch([ledgerInput(makeEvent({ zone_id: "z2", occurred_at: new Date().toISOString() }))]);
      const later = await retentionAt(Date.now() + 400 * DAY_MS).runOnce(new AbortController().signal);
      expect(later.droppedPartitions.map((n) => n.replace(/"/g, ""))).toContain("audit_events_y2025m01");
      // the DEFAULT partition is never dropped; its chained rows go row by row
      const left = await pool.query("SELECT count(*)::int AS n FROM audit_events_default");
      expect(left.rows[0].n).toBe(1); // z3's unchained upstream row stays: it is outside every chain
    } finally {
      await pool.end();
    }
  });

  it("the export goes on from upstream's watermark at upstream's key layout, with upstream's rows of later hours", async () => {
    // a row upstream ingested after its last export (hour 11), and one this project ingests after adoption
    await db.pool.query(
      `INSERT INTO audit_events (id, zone_id, event_type, decision, occurred_at, ingested_at, content_sha256, chain_hmac, chain_seq)
       VALUES ('up-late', 'z1', 'sts.exchange', 'allow', '2025-02-04T11:30:00Z', '2025-02-04T11:30:01Z', 'c9', 'h9', 6)`,
    );
    await migrateDatabase(db.url);
    const pool = createPool(db.url, { max: 4 });
    const redis = await createTestRedis("adopt-export");
    const s3 = await startS3();
    const client = s3Client(s3);
    try {
      const ours = makeEvent({ zone_id: "z1", occurred_at: "2025-02-04T11:45:00Z" });
      expect((await new LedgerWriter({ pool, auditKey: TEST_AUDIT_KEY }).writeBatch([ledgerInput(ours)])).inserted).toBe(1);
      const exporter = createExporter({
        pool,
        redis: redis.client,
        s3Config: s3ConfigOf(s3),
        logger: silentLogger,
        registry: new Registry(),
        leaseKeyPrefix: redis.keyPrefix,
        settleMs: 0,
        now: () => Date.parse("2025-02-04T12:30:00Z"),
      });
      try {
        const result = await exporter.exportPass({ signal: new AbortController().signal, fencingToken: 1 });
        // hour 11 only: upstream exported everything before it, and its rows there are not exported again
        expect(result).toMatchObject({ files: 1, rows: 2 });
        expect(await listKeys(client, s3.bucket)).toEqual(["audit/2025/02/04/2025-02-04T11.parquet"]);
        const { rows } = await readParquet(await getBytes(client, s3.bucket, "audit/2025/02/04/2025-02-04T11.parquet"));
        expect(rows.map((r) => [r.id, r.hmac_chain ?? null])).toEqual([
          ["up-late", null],
          [ours.id, expect.any(String)],
        ]);
      } finally {
        await exporter.close();
      }
    } finally {
      client.destroy();
      await s3.stop();
      await redis.close();
      await pool.end();
    }
  });

  it("a role under upstream's row-level security reads and writes every zone through the project's pool", async () => {
    await migrateDatabase(db.url);
    const role = `caracal_rls_${db.name.slice(-12)}`;
    await db.pool.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await db.pool.query(`GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO ${role}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}`);
      const url = new URL(db.url);
      url.username = role;
      const plain = new (await import("pg")).default.Pool({ connectionString: url.toString(), max: 1 });
      const projectPool = createPool(url.toString(), { max: 2 });
      try {
        expect((await plain.query("SELECT count(*)::int AS n FROM audit_events")).rows[0].n).toBe(0);
        expect((await projectPool.query("SELECT count(*)::int AS n FROM audit_events")).rows[0].n).toBe(8);
        const writer = new LedgerWriter({ pool: projectPool, auditKey: TEST_AUDIT_KEY });
        expect((await writer.writeBatch([ledgerInput(makeEvent({ zone_id: "z9", occurred_at: new Date().toISOString() }))])).inserted).toBe(1);
      } finally {
        await plain.end();
        await projectPool.end();
      }
    } finally {
      await db.pool.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => undefined);
    }
  });
});
