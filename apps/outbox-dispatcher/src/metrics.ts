import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type pg from "pg";

import { STATS_SQL } from "./sql.js";

/** Why a row was not dispatched: `redis_error`, `publish_timeout` (retried) or permanent reasons. */
export type FailureReason = "redis_error" | "publish_timeout" | "unknown_stream" | "payload_invalid" | "schema_invalid" | "max_attempts";

export interface DispatcherMetrics {
  registry: Registry;
  dispatched: Counter<"stream">;
  failures: Counter<"reason">;
  batchDuration: Histogram;
  databaseErrors: Counter;
}

/**
 * The dispatcher's metrics on its own registry. Pending rows, failed rows and the oldest pending age are
 * read from the table at scrape time (one aggregate over the pending partial index).
 */
export function createMetrics(pool: pg.Pool, options: { defaultMetrics?: boolean; registry?: Registry } = {}): DispatcherMetrics {
  const registry = options.registry ?? new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  let stats: Promise<{ pending: number; failed: number; oldest_pending_s: number } | undefined> | undefined;
  // One query per scrape serves the three gauges.
  const readStats = () => {
    stats ??= pool
      .query(STATS_SQL)
      .then((r) => r.rows[0] as { pending: number; failed: number; oldest_pending_s: number })
      .catch(() => undefined)
      .finally(() => setTimeout(() => (stats = undefined), 500).unref());
    return stats;
  };
  new Gauge({
    name: "caracal_outbox_pending_rows",
    help: "Rows not yet dispatched and not failed",
    registers: [registry],
    async collect() {
      const s = await readStats();
      if (s) this.set(s.pending);
    },
  });
  new Gauge({
    name: "caracal_outbox_failed_rows",
    help: "Rows failed for good (max attempts or unpublishable payload), kept for inspection and requeue",
    registers: [registry],
    async collect() {
      const s = await readStats();
      if (s) this.set(s.failed);
    },
  });
  new Gauge({
    name: "caracal_outbox_oldest_pending_age_seconds",
    help: "Age of the oldest pending row (0 when none)",
    registers: [registry],
    async collect() {
      const s = await readStats();
      if (s) this.set(s.oldest_pending_s);
    },
  });
  return {
    registry,
    dispatched: new Counter({ name: "caracal_outbox_dispatched_total", help: "Rows published and marked dispatched", labelNames: ["stream"], registers: [registry] }),
    failures: new Counter({ name: "caracal_outbox_failures_total", help: "Failed dispatch attempts by reason", labelNames: ["reason"], registers: [registry] }),
    batchDuration: new Histogram({
      name: "caracal_outbox_batch_duration_seconds",
      help: "Claim + publish time of a non-empty batch",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    databaseErrors: new Counter({ name: "caracal_outbox_database_errors_total", help: "Claim/mark round trips that failed", registers: [registry] }),
  };
}
