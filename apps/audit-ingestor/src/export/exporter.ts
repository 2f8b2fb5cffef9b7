/**
 * Parquet export of the audit ledger to S3 (seed 002 "S3 export").
 *
 * Only the holder of the Redis lease `audit:leader:export` exports. Each pass:
 * 1. fences in: records its fencing token on the watermark row (refused if a newer leader already did),
 *    so a paused, superseded leader can never commit again;
 * 2. exports every complete hour (ended at least `settleMs` ago) from the watermark on, one object
 *    `audit/YYYY/MM/DD/YYYY-MM-DDTHH.parquet` (upstream's layout) per hour with rows, skipping empty stretches;
 * 3. exports late rows: rows whose hour is below the watermark but that have no `exported_at` (ingested
 *    after their hour was exported) go to `audit/YYYY/MM/DD/YYYY-MM-DDTHH.late-<max ingested_at µs>.parquet`.
 *
 * One hour is one REPEATABLE READ transaction: the row count, the rows streamed to S3 (a cursor, one
 * row group per fetch, parts uploaded as they fill: never the whole hour in memory), `exported_at` on
 * exactly those rows, and the fenced watermark update all see one snapshot and commit together. A
 * watermark update that matches no row (a newer token is recorded) or fails to serialize rolls it all
 * back: no `exported_at` is set by a stale leader.
 *
 * Objects are written only if absent. An object already there (its writer died before committing) is
 * not rewritten: when its recorded row count equals the hour's, the rows are marked exported; when it
 * does not, the rows are left unmarked and the late-row step archives them in a file of their own.
 *
 * `exported_through` in the watermark row is an exclusive bound: every hour before it has been exported.
 */
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import type { LeaderContext } from "@caracal/service-kit";
import { LeaseKeeper, RedisLease, leaderGauge } from "@caracal/service-kit";
import type { RedisClient } from "@caracal/streams-core";
import { CaracalError, TransientError } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import { ParquetWriter } from "hyparquet-writer";

import type { ExportS3Config } from "./config-schema.js";
import { columnsOf, exportSelectList, parquetSchema } from "./parquet-layout.js";
import { isNotFound, ObjectExistsError, S3StreamSink } from "./s3-sink.js";
import { initZstd, zstdCompress } from "./zstd.js";

export const EXPORT_LEASE_KEY = "audit:leader:export";
const HOUR_MS = 3_600_000;

/** This process's fencing token is lower than one already recorded: another leader took over. */
export class StaleLeaderError extends CaracalError {
  readonly code = "STALE_LEADER";
  readonly permanent = false;
}

export interface ExporterOptions {
  pool: pg.Pool;
  /** The lease's Redis: needed by `run` only (a one-shot `exportHourCopy` takes no lease). */
  redis?: RedisClient;
  s3Config: ExportS3Config;
  logger: Logger;
  registry: Registry;
  /** Prefix of the lease keys (tests, tenants). Default "". */
  leaseKeyPrefix?: string;
  /** Default 15,000 ms; renewed every third. */
  leaseTtlMs?: number;
  /** Pause between passes while leader. Default 60,000 ms. */
  intervalMs?: number;
  /** An hour is exported once it ended this long ago. Default 300,000 ms. */
  settleMs?: number;
  /** Rows per fetch and per row group. Default 10,000. */
  pageRows?: number;
  /** Multipart part size. Default 8 MiB (min 5 MiB). */
  partSizeBytes?: number;
  /** Name of the watermark row. Default "s3". */
  watermarkName?: string;
  /** Object key prefix. Default "audit/". */
  objectPrefix?: string;
  /** Clock (tests). Default Date.now. */
  now?: () => number;
  /** Test hook: runs inside an hour's transaction after the object is in S3, before the fenced commit. */
  beforeCommit?: (hourStart: Date) => Promise<void>;
}

export interface PassResult {
  hours: number;
  files: number;
  rows: number;
}

export interface Exporter {
  /** Competes for the export lease and exports while leader, until `signal` aborts. */
  run(signal: AbortSignal): Promise<void>;
  /** One pass as leader with the given tenure (exposed for tests and a one-shot CLI). */
  exportPass(ctx: LeaderContext): Promise<PassResult>;
  /**
   * Re-exports one hour (the operator's `audit export --hour`): every row of the hour, in one snapshot,
   * to the hour's object when it does not exist, else to `...THH.reexport-<µs>.parquet` beside it (an
   * existing export object is never overwritten). Leaves the watermark and `exported_at` alone, so it
   * needs no lease and cannot disturb the leader.
   */
  exportHourCopy(hourStart: Date, signal: AbortSignal): Promise<{ key: string; rows: number }>;
  /** Frees the S3 client. */
  close(): void;
}

type Outcome = "written" | "existing" | "mismatch" | "empty";

export function createExporter(options: ExporterOptions): Exporter {
  const { pool, logger, registry } = options;
  const watermarkName = options.watermarkName ?? "s3";
  const pageRows = options.pageRows ?? 10_000;
  const settleMs = options.settleMs ?? 300_000;
  const objectPrefix = options.objectPrefix ?? "audit/";
  const now = options.now ?? Date.now;
  const s3 = new S3Client({
    endpoint: options.s3Config.endpoint,
    region: options.s3Config.region,
    forcePathStyle: options.s3Config.forcePathStyle ?? true,
    credentials: options.s3Config.credentials,
  });
  const bucket = options.s3Config.bucket;
  const metrics = exportMetrics(registry);

  async function fenceIn(token: number): Promise<Date | null> {
    const { rows } = await pool.query<{ exported_through: Date | null }>(
      `INSERT INTO audit_export_watermark (name, exported_through, fencing_token) VALUES ($1, NULL, $2)
       ON CONFLICT (name) DO UPDATE SET fencing_token = EXCLUDED.fencing_token, updated_at = now()
       WHERE audit_export_watermark.fencing_token <= EXCLUDED.fencing_token
       RETURNING exported_through`,
      [watermarkName, token],
    );
    const row = rows[0];
    if (row === undefined) throw new StaleLeaderError(`fencing token ${token} is older than the watermark's`);
    return row.exported_through;
  }

  async function headRows(key: string): Promise<{ rows: number | undefined } | undefined> {
    try {
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      const recorded = head.Metadata?.rows;
      return { rows: recorded === undefined ? undefined : Number(recorded) };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Streams the rows of `where` (in the transaction's snapshot) to `key`; returns the rows written. */
  async function writeObject(
    client: pg.PoolClient,
    key: string,
    where: string,
    params: unknown[],
    exportedAt: Date,
    meta: Record<string, string>,
    signal: AbortSignal,
  ): Promise<number> {
    const sink = new S3StreamSink({ s3, bucket, key, partSizeBytes: options.partSizeBytes, metadata: meta, contentType: "application/vnd.apache.parquet" });
    const writer = new ParquetWriter({
      writer: sink,
      schema: parquetSchema(),
      codec: "ZSTD",
      compressors: { ZSTD: zstdCompress },
      kvMetadata: Object.entries(meta).map(([k, value]) => ({ key: `caracal.${k}`, value })),
      createdBy: "caracal audit-ingestor",
    });
    const exportedAtParam = `$${params.length + 1}`;
    await client.query(
      `DECLARE audit_export_cursor NO SCROLL CURSOR FOR
       SELECT ${exportSelectList(exportedAtParam)} FROM audit_events WHERE ${where} ORDER BY occurred_at, id`,
      [...params, exportedAt],
    );
    let total = 0;
    try {
      for (;;) {
        if (signal.aborted) throw new StaleLeaderError("lease lost during export");
        const { rows } = await client.query<Record<string, unknown>>(`FETCH ${pageRows} FROM audit_export_cursor`);
        if (rows.length === 0) break;
        await writer.write({ columnData: columnsOf(rows), rowGroupSize: rows.length });
        total += rows.length;
      }
      await client.query("CLOSE audit_export_cursor");
      if (signal.aborted) throw new StaleLeaderError("lease lost during export");
      await writer.finish();
    } catch (error) {
      await sink.abort();
      throw error;
    }
    return total;
  }

  /**
   * Exports the rows of one hour matched by `extraWhere` in one transaction. `advanceTo` moves the
   * watermark (main step); undefined only re-checks the fence (late rows).
   */
  async function exportHour(
    hourStart: Date,
    token: number,
    signal: AbortSignal,
    late: boolean,
  ): Promise<{ outcome: Outcome; rows: number; marked: number }> {
    const hourEnd = new Date(hourStart.getTime() + HOUR_MS);
    const where = `occurred_at >= $1 AND occurred_at < $2${late ? " AND exported_at IS NULL" : ""}`;
    const params = [hourStart, hourEnd];
    const client = await pool.connect();
    let committed = false;
    try {
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
      const exportedAt = new Date(now());
      const { rows: stats } = await client.query<{ n: string; max_ingested: string | null }>(
        `SELECT count(*)::text AS n, (extract(epoch from max(ingested_at)) * 1000000)::int8::text AS max_ingested FROM audit_events WHERE ${where}`,
        params,
      );
      const count = Number(stats[0]?.n ?? 0);
      const key = objectKey(objectPrefix, hourStart, late ? `late-${stats[0]?.max_ingested ?? "0"}` : undefined);
      let outcome: Outcome = "empty";
      let rows = 0;
      if (count > 0) {
        const existing = await headRows(key);
        if (existing !== undefined) {
          outcome = existing.rows === count ? "existing" : "mismatch";
        } else {
          const meta = { rows: String(count), hour: hourStart.toISOString(), "fencing-token": String(token) };
          try {
            rows = await writeObject(client, key, where, params, exportedAt, meta, signal);
            if (rows !== count) throw new Error(`streamed ${rows} rows for ${key}, counted ${count}`);
            outcome = "written";
          } catch (error) {
            if (!(error instanceof ObjectExistsError)) throw error;
            const raced = await headRows(key);
            outcome = raced?.rows === count ? "existing" : "mismatch";
          }
        }
      }
      await options.beforeCommit?.(hourStart);
      if (signal.aborted) throw new StaleLeaderError("lease lost before commit");
      const fenced = await client.query(
        late
          ? `UPDATE audit_export_watermark SET fencing_token = $2, updated_at = now() WHERE name = $1 AND fencing_token <= $2`
          : `UPDATE audit_export_watermark SET exported_through = GREATEST(COALESCE(exported_through, $3), $3), fencing_token = $2, updated_at = now()
             WHERE name = $1 AND fencing_token <= $2`,
        late ? [watermarkName, token] : [watermarkName, token, hourEnd],
      );
      if (fenced.rowCount !== 1) throw new StaleLeaderError(`fencing token ${token} superseded`);
      let marked = 0;
      if (outcome === "written" || outcome === "existing") {
        const result = await client.query(`UPDATE audit_events SET exported_at = $3 WHERE ${where} AND exported_at IS NULL`, [...params, exportedAt]);
        marked = result.rowCount ?? 0;
      }
      await client.query("COMMIT");
      committed = true;
      if (outcome === "mismatch") {
        metrics.mismatches.inc();
        logger.warn({ key, rowsNow: count }, "export object exists with another row count; rows left for the late-row step");
      }
      logger.info({ key, outcome, rows: count, marked, fencingToken: token }, "export hour done");
      return { outcome, rows, marked };
    } catch (error) {
      if (!committed) await client.query("ROLLBACK").catch(() => undefined);
      if (isSerializationFailure(error)) throw new TransientError("export transaction lost a concurrent update; retried next pass", { cause: error });
      throw error;
    } finally {
      client.release();
    }
  }

  async function nextHour(from: Date | null, before: Date, late: boolean): Promise<Date | undefined> {
    const { rows } = await pool.query<{ first: Date | null }>(
      `SELECT min(occurred_at) AS first FROM audit_events
       WHERE occurred_at < $2 ${from === null ? "AND $1::timestamptz IS NULL" : "AND occurred_at >= $1"}${late ? " AND exported_at IS NULL" : ""}`,
      [from, before],
    );
    const first = rows[0]?.first;
    return first ? floorHour(first.getTime()) : undefined;
  }

  async function exportPass({ signal, fencingToken }: LeaderContext): Promise<PassResult> {
    await initZstd();
    const result: PassResult = { hours: 0, files: 0, rows: 0 };
    const tally = (r: { outcome: Outcome; rows: number }, kind: "hour" | "late") => {
      result.hours++;
      if (r.outcome === "written") {
        result.files++;
        result.rows += r.rows;
        metrics.files.inc({ kind });
        metrics.rows.inc(r.rows);
      }
    };
    try {
      let watermark = await fenceIn(fencingToken);
      const exportableEnd = floorHour(now() - settleMs);
      while (!signal.aborted) {
        const hour = await nextHour(watermark, exportableEnd, false);
        if (hour === undefined) break;
        tally(await exportHour(hour, fencingToken, signal, false), "hour");
        watermark = new Date(hour.getTime() + HOUR_MS);
      }
      if (watermark !== null) {
        let lateFrom: Date | null = null;
        while (!signal.aborted) {
          const hour = await nextHour(lateFrom, watermark, true);
          if (hour === undefined) break;
          const r = await exportHour(hour, fencingToken, signal, true);
          tally(r, "late");
          if (r.outcome === "mismatch") logger.error({ hour }, "late-row object exists with another row count: left for the next pass");
          lateFrom = new Date(hour.getTime() + HOUR_MS);
        }
      }
      if (watermark !== null) metrics.watermark.set(watermark.getTime() / 1000);
      metrics.runs.inc({ result: "ok" });
      return result;
    } catch (error) {
      metrics.runs.inc({ result: error instanceof StaleLeaderError ? "stale" : "error" });
      throw error;
    }
  }

  async function exportHourCopy(hourStart: Date, signal: AbortSignal): Promise<{ key: string; rows: number }> {
    await initZstd();
    const start = floorHour(hourStart.getTime());
    const where = "occurred_at >= $1 AND occurred_at < $2";
    const params = [start, new Date(start.getTime() + HOUR_MS)];
    const client = await pool.connect();
    try {
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const exportedAt = new Date(now());
      const { rows: stats } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM audit_events WHERE ${where}`, params);
      const count = Number(stats[0]?.n ?? 0);
      let key = objectKey(objectPrefix, start);
      if (count === 0) {
        await client.query("COMMIT");
        return { key, rows: 0 };
      }
      if ((await headRows(key)) !== undefined) key = objectKey(objectPrefix, start, `reexport-${exportedAt.getTime() * 1000}`);
      const meta = { rows: String(count), hour: start.toISOString(), reexport: "true" };
      const rows = await writeObject(client, key, where, params, exportedAt, meta, signal);
      await client.query("COMMIT");
      metrics.files.inc({ kind: "reexport" });
      metrics.rows.inc(rows);
      logger.info({ key, rows }, "hour re-exported");
      return { key, rows };
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  return {
    exportPass,
    exportHourCopy,
    async run(signal) {
      await initZstd();
      if (options.redis === undefined) throw new Error("createExporter: run needs redis (the export lease)");
      const lease = new RedisLease({ redis: options.redis, key: EXPORT_LEASE_KEY, keyPrefix: options.leaseKeyPrefix, ttlMs: options.leaseTtlMs, logger });
      const gauge = leaderGauge(registry);
      gauge.set({ lease: EXPORT_LEASE_KEY }, 0);
      await new LeaseKeeper({
        lease,
        logger,
        taskEveryMs: options.intervalMs ?? 60_000,
        onLeaderChange: (held) => gauge.set({ lease: EXPORT_LEASE_KEY }, held ? 1 : 0),
        task: async (ctx) => {
          await exportPass(ctx);
        },
      }).run(signal);
    },
    close() {
      s3.destroy();
    },
  };
}

/**
 * `audit/YYYY/MM/DD/YYYY-MM-DDTHH.parquet` of the UTC hour starting at `hourStart`: upstream's key layout,
 * so tables and jobs defined over an upstream bucket read this project's objects too. `suffix` for
 * late-row files (`...THH.late-<µs>.parquet`), which upstream does not write.
 */
export function objectKey(prefix: string, hourStart: Date, suffix?: string): string {
  const p = (n: number) => String(n).padStart(2, "0");
  const d = hourStart;
  const day = `${d.getUTCFullYear()}/${p(d.getUTCMonth() + 1)}/${p(d.getUTCDate())}`;
  const hour = `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}T${p(d.getUTCHours())}`;
  return `${prefix}${day}/${hour}${suffix ? `.${suffix}` : ""}.parquet`;
}

function floorHour(ms: number): Date {
  return new Date(Math.floor(ms / HOUR_MS) * HOUR_MS);
}

function isSerializationFailure(error: unknown): boolean {
  return typeof error === "object" && error !== null && "code" in error && (error as { code: unknown }).code === "40001";
}

function exportMetrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    runs: get("caracal_audit_export_runs_total", () => new Counter({ name: "caracal_audit_export_runs_total", help: "Export passes by result (ok, error, stale)", labelNames: ["result"], registers: [registry] })),
    files: get("caracal_audit_exported_files_total", () => new Counter({ name: "caracal_audit_exported_files_total", help: "Parquet objects written (hour, late)", labelNames: ["kind"], registers: [registry] })),
    rows: get("caracal_audit_exported_rows_total", () => new Counter({ name: "caracal_audit_exported_rows_total", help: "Rows written to Parquet objects", registers: [registry] })),
    mismatches: get("caracal_audit_export_object_mismatch_total", () => new Counter({ name: "caracal_audit_export_object_mismatch_total", help: "Existing objects whose row count differs from the hour's rows", registers: [registry] })),
    watermark: get("caracal_audit_export_watermark_seconds", () => new Gauge({ name: "caracal_audit_export_watermark_seconds", help: "exported_through of the export watermark (unix seconds)", registers: [registry] })),
  };
}
