/**
 * The leader-only parts of the audit ingestor in one call for the composition root: the S3 exporter
 * (when configured) and the retention rotator, each competing for its own lease. Resolves once `signal`
 * aborted, every running pass stopped between two steps, and both leases are released.
 */
import type { RedisClient } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";
import type { Registry } from "prom-client";

import { createRetention } from "../retention/retention.js";
import type { ExportS3Config } from "./config-schema.js";
import { createExporter } from "./exporter.js";

export interface LeadersOptions {
  pool: pg.Pool;
  redis: RedisClient;
  logger: Logger;
  registry: Registry;
  /** CARACAL_KEY_PREFIX. */
  keyPrefix?: string;
  /** AUDIT_LEADER_LEASE_TTL_MS. Default 15,000. */
  leaseTtlMs?: number;
  /** Undefined = export off (retention then deletes unexported rows too). */
  export?: { s3Config: ExportS3Config; intervalMs?: number; settleMs?: number; pageRows?: number };
  retention: { days: number; intervalMs: number; maxDeliveries: number };
}

export async function runLeaders(options: LeadersOptions, signal: AbortSignal): Promise<void> {
  const { pool, redis, logger, registry } = options;
  const exporter =
    options.export === undefined
      ? undefined
      : createExporter({
          pool,
          redis,
          logger: logger.child({ component: "export" }),
          registry,
          s3Config: options.export.s3Config,
          leaseKeyPrefix: options.keyPrefix,
          leaseTtlMs: options.leaseTtlMs,
          intervalMs: options.export.intervalMs,
          settleMs: options.export.settleMs,
          pageRows: options.export.pageRows,
        });
  const retention = createRetention({
    pool,
    redis,
    logger: logger.child({ component: "retention" }),
    registry,
    leaseKeyPrefix: options.keyPrefix,
    leaseTtlMs: options.leaseTtlMs,
    retentionDays: options.retention.days,
    intervalMs: options.retention.intervalMs,
    batchSize: options.retention.maxDeliveries * 100,
    exportEnabled: exporter !== undefined,
  });
  try {
    await Promise.all([exporter?.run(signal), retention.run(signal)]);
  } finally {
    exporter?.close();
  }
}
