/**
 * The tamper sweeper: every AUDIT_TAMPER_SWEEP_INTERVAL_MS, over the zones with events in the last
 * AUDIT_TAMPER_ROLLING_HOURS, re-verifies content hashes, the ledger chain (from the row before the window
 * to the zone's last row), chain_seq continuity and producer chains (gaps older than the grace time).
 * Broken rows get `tamper_detected = true` and one alert per (zone, row, kind): a break found again by the
 * next sweep is not alerted twice.
 *
 * One replica at a time: the sweep holds a session-level PostgreSQL advisory lock (released with the
 * connection if the process dies); a replica that cannot take it skips the round.
 */
import type { Logger } from "pino";
import type pg from "pg";

import { ZONE_LOCK_CLASS } from "../ledger/writer.js";
import type { AuditMetrics } from "../metrics.js";
import type { LedgerBreak } from "../verify/ledger-verify.js";
import { verifyZone } from "../verify/ledger-verify.js";

/** Key of the sweeper's lock in the zone-lock class; zone keys are hashes, a collision only delays a batch. */
const SWEEP_LOCK_KEY = 0x53574550; // "SWEP"

export interface SweeperOptions {
  pool: pg.Pool;
  auditKey: Buffer | undefined;
  rollingHours: number;
  gapGraceMs: number;
  intervalMs: number;
  metrics?: AuditMetrics;
  logger?: Logger;
  now?: () => number;
}

export interface SweepResult {
  /** False when another replica held the sweep lock. */
  readonly ran: boolean;
  readonly zones: number;
  readonly rowsChecked: number;
  readonly breaks: readonly LedgerBreak[];
  /** Breaks not alerted before. */
  readonly newAlerts: number;
}

export async function sweepOnce(options: SweeperOptions): Promise<SweepResult> {
  const { pool } = options;
  const now = options.now?.() ?? Date.now();
  const lockClient = await pool.connect();
  let locked = false;
  try {
    const got = await lockClient.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS ok", [ZONE_LOCK_CLASS, SWEEP_LOCK_KEY]);
    locked = got.rows[0]?.ok === true;
    if (!locked) return { ran: false, zones: 0, rowsChecked: 0, breaks: [], newAlerts: 0 };
    const windowStart = new Date(now - options.rollingHours * 3_600_000);
    // Zones with events in the window, and the first chain_seq of each: verification runs from there to the
    // zone's end, so events ingested late with an old occurred_at are covered too.
    const zones = await pool.query<{ zone_id: string; lo: string }>(
      "SELECT zone_id, min(chain_seq) AS lo FROM audit_events WHERE occurred_at >= $1 AND chain_seq IS NOT NULL GROUP BY zone_id ORDER BY zone_id",
      [windowStart],
    );
    const breaks: LedgerBreak[] = [];
    let rowsChecked = 0;
    for (const z of zones.rows) {
      const r = await verifyZone(z.zone_id, { fromSeq: Number(z.lo) }, { pool, auditKey: options.auditKey, gapGraceMs: options.gapGraceMs, now: () => now });
      rowsChecked += r.rowsChecked;
      breaks.push(...r.breaks);
    }
    const newAlerts = await recordBreaks(pool, breaks);
    for (const b of newAlerts) options.metrics?.chainBreaks.inc({ kind: b.kind });
    options.metrics?.sweepRowsChecked.inc(rowsChecked);
    options.metrics?.sweeps.inc({ outcome: "ok" });
    if (newAlerts.length > 0) {
      options.logger?.error({ breaks: newAlerts.map((b) => ({ kind: b.kind, zone: b.zoneId, chainSeq: b.chainSeq, id: b.eventId })) }, "tamper sweep: ledger breaks found");
    }
    options.logger?.info({ zones: zones.rows.length, rowsChecked, breaks: breaks.length, newAlerts: newAlerts.length }, "tamper sweep done");
    return { ran: true, zones: zones.rows.length, rowsChecked, breaks, newAlerts: newAlerts.length };
  } catch (error) {
    options.metrics?.sweeps.inc({ outcome: "error" });
    throw error;
  } finally {
    if (locked) await lockClient.query("SELECT pg_advisory_unlock($1, $2)", [ZONE_LOCK_CLASS, SWEEP_LOCK_KEY]).catch(() => undefined);
    lockClient.release();
  }
}

/** Marks the broken rows and writes the alerts not written before; returns the newly alerted breaks. */
async function recordBreaks(pool: pg.Pool, breaks: readonly LedgerBreak[]): Promise<LedgerBreak[]> {
  if (breaks.length === 0) return [];
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query("UPDATE audit_events SET tamper_detected = true WHERE id = ANY($1::text[]) AND NOT tamper_detected", [[...new Set(breaks.map((b) => b.eventId))]]);
    const inserted = await client.query<{ zone_id: string; event_id: string; kind: string }>(
      `INSERT INTO audit_tamper_alerts (zone_id, event_id, kind, detail)
       SELECT b.zone_id, b.event_id, b.kind, b.detail FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS b(zone_id, event_id, kind, detail)
        WHERE NOT EXISTS (SELECT 1 FROM audit_tamper_alerts a WHERE a.zone_id = b.zone_id AND a.event_id = b.event_id AND a.kind = b.kind)
       RETURNING zone_id, event_id, kind`,
      [
        breaks.map((b) => b.zoneId),
        breaks.map((b) => b.eventId),
        breaks.map((b) => b.kind),
        breaks.map((b) => JSON.stringify({ chain_seq: b.chainSeq, detail: b.detail, source: "sweeper" })),
      ],
    );
    await client.query("COMMIT");
    const fresh = new Set(inserted.rows.map((r) => `${r.zone_id}\u0000${r.event_id}\u0000${r.kind}`));
    return breaks.filter((b) => fresh.has(`${b.zoneId}\u0000${b.eventId}\u0000${b.kind}`));
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Runs `sweepOnce` every `intervalMs` until `signal` aborts; a failed sweep is logged and retried next round. */
export function startSweeper(options: SweeperOptions, signal: AbortSignal): { stopped: Promise<void> } {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  const stopped = new Promise<void>((resolve) => {
    const schedule = () => {
      timer = setTimeout(() => {
        running = sweepOnce(options)
          .catch((error) => options.logger?.error({ err: error }, "tamper sweep failed"))
          .finally(() => {
            if (!signal.aborted) schedule();
          });
      }, options.intervalMs);
      timer.unref();
    };
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        void running.then(() => resolve());
      },
      { once: true },
    );
    if (signal.aborted) resolve();
    else schedule();
  });
  return { stopped };
}
