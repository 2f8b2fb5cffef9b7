/**
 * Prometheus metrics of the audit ingestor, on one registry served at /metrics. The consumer engine
 * reports through `consumerHooks` (the shared `caracal_stream_*` metrics). The exporter, retention and leases register theirs on the same registry
 * (`caracal_audit_export_*`, `caracal_audit_retention_*`, `caracal_leader{lease}`).
 */
import type { ConsumerMetricsHooks } from "@caracal/streams-core";
import { Topics, createPrometheusConsumerMetrics } from "@caracal/streams-core";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class AuditMetrics {
  readonly registry: Registry;
  readonly inserted = new Counter({ name: "caracal_audit_events_inserted_total", help: "Rows inserted into audit_events", registers: [] });
  readonly duplicates = new Counter({ name: "caracal_audit_events_duplicates_total", help: "Redelivered events already stored with identical content (no-op)", registers: [] });
  readonly rejected = new Counter({ name: "caracal_audit_events_rejected_total", help: "Entries rejected (dead-lettered at once), by reason", labelNames: ["reason"], registers: [] });
  readonly dlqRows = new Counter({ name: "caracal_audit_events_dlq_rows_total", help: "Entries moved to the audit_events_dlq table after AUDIT_MAX_DELIVERIES", registers: [] });
  readonly writeFailures = new Counter({ name: "caracal_audit_ledger_write_failures_total", help: "Ledger batch transactions that failed (entries left pending)", registers: [] });
  readonly batchSeconds = new Histogram({
    name: "caracal_audit_ledger_batch_duration_seconds",
    help: "Duration of one ledger batch transaction",
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [],
  });
  readonly oldestPendingAge = new Gauge({
    name: "caracal_stream_oldest_pending_age_seconds",
    help: "Age of the group's oldest pending entry (by its entry id)",
    labelNames: ["stream", "group"],
    registers: [],
  });
  readonly chainBreaks = new Counter({ name: "caracal_audit_chain_breaks_total", help: "Ledger and producer-chain breaks found (ingest and sweeper), by kind", labelNames: ["kind"], registers: [] });
  readonly sweeps = new Counter({ name: "caracal_audit_tamper_sweeps_total", help: "Tamper sweeps, by outcome", labelNames: ["outcome"], registers: [] });
  readonly sweepRowsChecked = new Counter({ name: "caracal_audit_tamper_sweep_rows_total", help: "Rows re-verified by the tamper sweeper", registers: [] });
  readonly schemaDeviations = new Counter({
    name: "caracal_audit_schema_deviations_total",
    help: "Stored events that deviate from the published audit event schema, by field (WIRE §6: stored as sent, never dead-lettered)",
    labelNames: ["field"],
    registers: [],
  });
  readonly replayed = new Counter({ name: "caracal_audit_replay_events_total", help: "Events read from AUDIT_REPLAY_DIR files, by outcome", labelNames: ["outcome"], registers: [] });

  /**
   * On `registry` (the service's one registry) when given, else a registry of its own with the process
   * metrics (tests, benchmarks).
   */
  constructor(options: { defaultMetrics?: boolean; registry?: Registry } = {}) {
    this.registry = options.registry ?? new Registry();
    if (options.defaultMetrics !== false && options.registry === undefined) collectDefaultMetrics({ register: this.registry });
    for (const metric of Object.values(this)) {
      if (metric instanceof Counter || metric instanceof Gauge || metric instanceof Histogram) this.registry.registerMetric(metric);
    }
  }

  /** The consumer engine's hooks: the shared `caracal_stream_*` metrics, labelled with the audit stream and group. */
  consumerHooks(): Required<ConsumerMetricsHooks> {
    return createPrometheusConsumerMetrics(this.registry, { stream: Topics.auditEvents.stream, group: Topics.auditEvents.groups.auditIngestor });
  }
}
