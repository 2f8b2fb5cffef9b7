/**
 * Retention rotator (seed 002 "Retention"): only the holder of the Redis lease `audit:leader:retention`,
 * every `intervalMs`, deletes rows older than `retentionDays` by both `occurred_at` and `ingested_at` (a
 * producer's clock alone never decides: an event dated decades ago, ingested now, stays its full
 * retention); with export on, only rows already exported (`exported_at IS NOT NULL`).
 *
 * Deleting must not break the ledger (WIRE §7), so rows go per zone, oldest `chain_seq` first, and only
 * as a prefix of the zone's chain: a batch stops at the first row that may not go yet (too young, or not
 * exported), and a zone's newest row is always kept (the ledger writer continues the chain from it).
 * The `(chain_seq, hmac_chain)` of the last deleted row is written to `audit_chain_anchors` in the same
 * statement, so a verifier starts the zone's chain from the anchor instead of the empty string.
 *
 * Each batch of `batchSize` rows (AUDIT_MAX_DELIVERIES × 100) is its own short statement, in autocommit:
 * row locks are held for one batch only. The head rows are locked `FOR UPDATE` so a row updated meanwhile
 * (the sweeper marking it) is deleted in its current version or the batch waits, never skipped mid-prefix.
 *
 * No fencing token is needed: a delete is idempotent, the rows it may touch are eligible whoever deletes
 * them, and an anchor only moves forward (a stale leader's late batch cannot move it back).
 */
import type { LeaderContext } from "@caracal/service-kit";
import { LeaseKeeper, RedisLease, leaderGauge } from "@caracal/service-kit";
import type { RedisClient } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";
import { Counter } from "prom-client";

import { isPartitionedLedger } from "../ledger/writer.js";
import type { Registry } from "prom-client";

export const RETENTION_LEASE_KEY = "audit:leader:retention";
const DAY_MS = 86_400_000;

export interface RetentionOptions {
  pool: pg.Pool;
  redis: RedisClient;
  logger: Logger;
  registry: Registry;
  retentionDays: number;
  /** Rows per DELETE statement: AUDIT_MAX_DELIVERIES × 100. */
  batchSize: number;
  /** With export on, only exported rows are deleted. */
  exportEnabled: boolean;
  /** Pause between runs while leader. Default 3,600,000 ms. */
  intervalMs?: number;
  leaseKeyPrefix?: string;
  /** Default 15,000 ms. */
  leaseTtlMs?: number;
  /** Clock (tests). Default Date.now. */
  now?: () => number;
}

export interface RetentionResult {
  deleted: number;
  batches: number;
  zones: number;
  /** Partitions dropped whole (an adopted upstream table only). */
  droppedPartitions: string[];
}

export interface Retention {
  /** Competes for the retention lease and runs every `intervalMs` while leader, until `signal` aborts. */
  run(signal: AbortSignal): Promise<void>;
  /** One run (exposed for tests and a one-shot CLI); stops between batches once `signal` aborts. */
  runOnce(signal: AbortSignal): Promise<RetentionResult>;
}

export function createRetention(options: RetentionOptions): Retention {
  const { pool, logger, registry } = options;
  const now = options.now ?? Date.now;
  const metrics = retentionMetrics(registry);
  // Old by both clocks: a producer's wrong clock (an event dated 1971) must not erase a fresh record.
  const eligible = `occurred_at < $2 AND ingested_at < $2${options.exportEnabled ? " AND exported_at IS NOT NULL" : ""}`;
  // A row is addressed by its ctid in a plain table; in an adopted upstream table (partitioned) a ctid is
  // only unique within its partition, so by the primary key (id, occurred_at).
  const batchSql = (partitioned: boolean) => `
    WITH head AS (
      SELECT ${partitioned ? "id AS row_id, occurred_at AS row_at" : "ctid AS row_ctid"}, chain_seq, hmac_chain, (${eligible}) AS ok
        FROM audit_events WHERE zone_id = $1 AND chain_seq IS NOT NULL ORDER BY chain_seq LIMIT $3 FOR UPDATE
    ), bound AS (
      SELECT least(
        (SELECT min(chain_seq) FROM head WHERE NOT ok),
        (SELECT max(chain_seq) FROM audit_events WHERE zone_id = $1)
      ) AS keep_from
    ), del AS (
      DELETE FROM audit_events
       WHERE ${partitioned ? "(id, occurred_at) IN (SELECT row_id, row_at" : "ctid IN (SELECT row_ctid"} FROM head, bound WHERE ok AND chain_seq < bound.keep_from)
      RETURNING chain_seq, hmac_chain
    ), anchor AS (
      INSERT INTO audit_chain_anchors (zone_id, chain_seq, hmac_chain, updated_at)
      SELECT $1, chain_seq, COALESCE(hmac_chain, ''), now() FROM del ORDER BY chain_seq DESC LIMIT 1
      ON CONFLICT (zone_id) DO UPDATE SET chain_seq = EXCLUDED.chain_seq, hmac_chain = EXCLUDED.hmac_chain, updated_at = now()
       WHERE audit_chain_anchors.chain_seq < EXCLUDED.chain_seq
    )
    SELECT (SELECT count(*) FROM del)::int AS deleted,
           (SELECT count(*) FROM head)::int AS examined,
           EXISTS (SELECT 1 FROM head WHERE NOT ok) AS blocked`;

  /** Zones with at least one eligible row: a loose index scan over (zone_id, occurred_at). */
  async function candidateZones(cutoff: Date): Promise<string[]> {
    const { rows } = await pool.query<{ zone_id: string }>(
      `WITH RECURSIVE z AS (
         (SELECT zone_id FROM audit_events ORDER BY zone_id LIMIT 1)
         UNION ALL
         SELECT (SELECT e.zone_id FROM audit_events e WHERE e.zone_id > z.zone_id ORDER BY e.zone_id LIMIT 1) FROM z WHERE z.zone_id IS NOT NULL
       )
       SELECT zone_id FROM z WHERE zone_id IS NOT NULL
         AND EXISTS (SELECT 1 FROM audit_events e WHERE e.zone_id = z.zone_id AND e.occurred_at < $1 AND e.ingested_at < $1)`,
      [cutoff],
    );
    return rows.map((r) => r.zone_id);
  }

  async function runOnce(signal: AbortSignal): Promise<RetentionResult> {
    const cutoff = new Date(now() - options.retentionDays * DAY_MS);
    const result: RetentionResult = { deleted: 0, batches: 0, zones: 0, droppedPartitions: [] };
    try {
      const partitioned = await isPartitionedLedger(pool);
      // An adopted upstream table: whole partitions go first; rows that held one back (late events
      // interleaving a zone's chain, DEFAULT-partition rows) then go row by row; and a partition emptied or
      // freed by that goes in a second pass.
      const partitionOptions = { pool, logger, cutoff, eligible: eligible.replaceAll("$2", "$1") };
      const dropPartitions = async () => {
        for (const partition of await droppablePartitions(partitionOptions)) {
          if (signal.aborted) break;
          if (await dropPartition(partition, partitionOptions)) {
            result.droppedPartitions.push(partition.name);
            metrics.droppedPartitions.inc();
          }
        }
      };
      if (partitioned) {
        await ensureMonthlyPartitions(pool, new Date(now()), logger);
        await dropPartitions();
      }
      const sql = batchSql(partitioned);
      for (const zone of await candidateZones(cutoff)) {
        result.zones++;
        while (!signal.aborted) {
          const { rows } = await pool.query<{ deleted: number; examined: number; blocked: boolean }>(sql, [zone, cutoff, options.batchSize]);
          const r = rows[0];
          if (r === undefined) break;
          result.batches++;
          result.deleted += r.deleted;
          metrics.deleted.inc(r.deleted);
          if (r.blocked || r.deleted === 0 || r.examined < options.batchSize) break;
        }
        if (signal.aborted) break;
      }
      if (partitioned && !signal.aborted) await dropPartitions();
      metrics.runs.inc({ result: "ok" });
      logger.info({ ...result, cutoff: cutoff.toISOString(), exportEnabled: options.exportEnabled }, "retention run done");
      return result;
    } catch (error) {
      metrics.runs.inc({ result: "error" });
      throw error;
    }
  }

  return {
    runOnce,
    async run(signal) {
      const lease = new RedisLease({ redis: options.redis, key: RETENTION_LEASE_KEY, keyPrefix: options.leaseKeyPrefix, ttlMs: options.leaseTtlMs, logger });
      const gauge = leaderGauge(registry);
      gauge.set({ lease: RETENTION_LEASE_KEY }, 0);
      await new LeaseKeeper({
        lease,
        logger,
        taskEveryMs: options.intervalMs ?? 3_600_000,
        onLeaderChange: (held) => gauge.set({ lease: RETENTION_LEASE_KEY }, held ? 1 : 0),
        task: async ({ signal: tenure }: LeaderContext) => {
          await runOnce(tenure);
        },
      }).run(signal);
    },
  };
}

function retentionMetrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    runs: get("caracal_audit_retention_runs_total", () => new Counter({ name: "caracal_audit_retention_runs_total", help: "Retention runs by result (ok, error)", labelNames: ["result"], registers: [registry] })),
    deleted: get("caracal_audit_retention_deleted_rows_total", () => new Counter({ name: "caracal_audit_retention_deleted_rows_total", help: "audit_events rows deleted by retention", registers: [registry] })),
    droppedPartitions: get("caracal_audit_retention_dropped_partitions_total", () => new Counter({ name: "caracal_audit_retention_dropped_partitions_total", help: "audit_events partitions dropped whole by retention (adopted upstream table)", registers: [registry] })),
  };
}

// ---- Adopted upstream table: audit_events partitioned by month on occurred_at (upstream's layout) ----

interface Partition {
  /** Qualified, quoted name (regclass text). */
  name: string;
  oid: number;
  upper: Date;
}

interface PartitionOptions {
  pool: pg.Pool;
  logger: Logger;
  cutoff: Date;
  /** The row eligibility condition with the cutoff as $1. */
  eligible: string;
}

/**
 * Keeps upstream's rolling window of monthly partitions (this month and the next three), as upstream's
 * retention worker did, so new rows land in a partition that can be dropped whole later rather than in
 * the DEFAULT partition. Upstream's SECURITY DEFINER function is used where it exists. A month whose
 * rows already sit in the DEFAULT partition cannot be created (PostgreSQL refuses): it is logged and
 * those rows are deleted row by row.
 */
async function ensureMonthlyPartitions(pool: pg.Pool, now: Date, logger: Logger): Promise<void> {
  const { rows } = await pool.query<{ has_fn: boolean }>("SELECT to_regprocedure('audit_partition_ensure(date)') IS NOT NULL AS has_fn");
  const upstreamFunction = rows[0]?.has_fn === true;
  for (let m = 0; m <= 3; m++) {
    const first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + m, 1));
    const next = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + m + 1, 1));
    const name = `audit_events_y${first.getUTCFullYear()}m${String(first.getUTCMonth() + 1).padStart(2, "0")}`;
    try {
      if (upstreamFunction) await pool.query("SELECT audit_partition_ensure($1::date)", [first.toISOString().slice(0, 10)]);
      else {
        await pool.query(
          `DO $$ BEGIN EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)', ${pgLiteral(name)}, ${pgLiteral(first.toISOString())}, ${pgLiteral(next.toISOString())}); END $$`,
        );
      }
    } catch (error) {
      logger.warn({ err: error, partition: name }, "retention: monthly partition not created (rows of that month in the DEFAULT partition?)");
    }
  }
}

function pgLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** Range partitions of audit_events whose upper bound is at or before the cutoff, oldest first (never DEFAULT). */
async function droppablePartitions({ pool, cutoff }: PartitionOptions): Promise<Partition[]> {
  const { rows } = await pool.query<{ name: string; oid: number; upper: Date | null }>(
    `SELECT c.oid::regclass::text AS name, c.oid::int8 AS oid,
            substring(pg_get_expr(c.relpartbound, c.oid) from $re$TO \\('([^']+)'\\)$re$)::timestamptz AS upper
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'audit_events'::regclass`,
  );
  return rows
    .filter((r): r is { name: string; oid: number; upper: Date } => r.upper !== null && r.upper.getTime() <= cutoff.getTime())
    .map((r) => ({ name: r.name, oid: Number(r.oid), upper: r.upper }))
    .sort((a, b) => a.upper.getTime() - b.upper.getTime());
}

/**
 * Why a partition may not be dropped yet, or null: a row too young (or not exported); or, in some zone,
 * a row of the partition is not part of a prefix of the zone's chain (a row of another partition has a
 * lower chain_seq: late events interleave), or the partition holds the zone's newest row (the ledger
 * writer continues the chain from it). Those rows go row by row, as in a plain table.
 */
async function holdBack(client: pg.ClientBase, partition: Partition, options: PartitionOptions): Promise<string | null> {
  const { rows } = await client.query<{ young: boolean; interleaved: boolean }>(
    `WITH tops AS (SELECT zone_id, max(chain_seq) AS top FROM ONLY ${partition.name} WHERE chain_seq IS NOT NULL GROUP BY zone_id)
     SELECT EXISTS (SELECT 1 FROM ONLY ${partition.name} WHERE NOT (${options.eligible})) AS young,
            EXISTS (SELECT 1 FROM tops t WHERE
                      EXISTS (SELECT 1 FROM audit_events e WHERE e.zone_id = t.zone_id AND e.chain_seq < t.top AND e.tableoid <> $2::oid)
                      OR NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.zone_id = t.zone_id AND e.chain_seq > t.top)) AS interleaved`,
    [options.cutoff, partition.oid],
  );
  const r = rows[0];
  if (r === undefined) return "unknown";
  if (r.young) return "rows not yet eligible";
  if (r.interleaved) return "rows interleave with other partitions in a zone's chain";
  return null;
}

/**
 * Drops one partition whose rows are all eligible, in one transaction: the partition is locked against
 * inserts (SHARE), the conditions are checked again under that lock, each zone's anchor moves to the
 * partition's last row of that zone (forward only), and the partition is dropped. A lock not granted
 * within 5 s (busy ingest) leaves the partition for the next run.
 */
async function dropPartition(partition: Partition, options: PartitionOptions): Promise<boolean> {
  const { pool, logger } = options;
  const client = await pool.connect();
  try {
    // checked first without a lock (a full read of the partition), then again under it
    if ((await holdBack(client, partition, options)) !== null) return false;
    await client.query("BEGIN");
    await client.query("SET LOCAL lock_timeout = '5s'");
    await client.query(`LOCK TABLE ${partition.name} IN SHARE MODE`);
    const reason = await holdBack(client, partition, options);
    if (reason !== null) {
      await client.query("ROLLBACK");
      logger.info({ partition: partition.name, reason }, "retention: partition kept");
      return false;
    }
    await client.query(
      `INSERT INTO audit_chain_anchors (zone_id, chain_seq, hmac_chain, updated_at)
       SELECT DISTINCT ON (zone_id) zone_id, chain_seq, COALESCE(hmac_chain, ''), now()
         FROM ONLY ${partition.name} WHERE chain_seq IS NOT NULL ORDER BY zone_id, chain_seq DESC
       ON CONFLICT (zone_id) DO UPDATE SET chain_seq = EXCLUDED.chain_seq, hmac_chain = EXCLUDED.hmac_chain, updated_at = now()
        WHERE audit_chain_anchors.chain_seq < EXCLUDED.chain_seq`,
    );
    await client.query(`DROP TABLE ${partition.name}`);
    await client.query("COMMIT");
    logger.info({ partition: partition.name, upper: partition.upper.toISOString() }, "retention: partition dropped");
    return true;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    logger.warn({ err: error, partition: partition.name }, "retention: partition not dropped");
    return false;
  } finally {
    client.release();
  }
}
