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
  const batchSql = `
    WITH head AS (
      SELECT ctid AS row_ctid, chain_seq, hmac_chain, (${eligible}) AS ok
        FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq LIMIT $3 FOR UPDATE
    ), bound AS (
      SELECT least(
        (SELECT min(chain_seq) FROM head WHERE NOT ok),
        (SELECT max(chain_seq) FROM audit_events WHERE zone_id = $1)
      ) AS keep_from
    ), del AS (
      DELETE FROM audit_events
       WHERE ctid IN (SELECT row_ctid FROM head, bound WHERE ok AND chain_seq < bound.keep_from)
      RETURNING chain_seq, hmac_chain
    ), anchor AS (
      INSERT INTO audit_chain_anchors (zone_id, chain_seq, hmac_chain, updated_at)
      SELECT $1, chain_seq, hmac_chain, now() FROM del ORDER BY chain_seq DESC LIMIT 1
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
    const result: RetentionResult = { deleted: 0, batches: 0, zones: 0 };
    try {
      for (const zone of await candidateZones(cutoff)) {
        result.zones++;
        while (!signal.aborted) {
          const { rows } = await pool.query<{ deleted: number; examined: number; blocked: boolean }>(batchSql, [zone, cutoff, options.batchSize]);
          const r = rows[0];
          if (r === undefined) break;
          result.batches++;
          result.deleted += r.deleted;
          metrics.deleted.inc(r.deleted);
          if (r.blocked || r.deleted === 0 || r.examined < options.batchSize) break;
        }
        if (signal.aborted) break;
      }
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
  };
}
