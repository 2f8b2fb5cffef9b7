/**
 * Prometheus metrics of the audit ingestor, on one registry served at /metrics. The consumer engine
 * reports through `consumerHooks`. The exporter, retention and leases register theirs on the same registry
 * (`caracal_audit_export_*`, `caracal_audit_retention_*`, `caracal_leader{lease}`).
 */
import type { ConsumerMetricsHooks, DeadLetterReason } from "@caracal/streams-core";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class AuditMetrics {
  readonly registry = new Registry();
  readonly inserted = new Counter({ name: "audit_events_inserted_total", help: "Rows inserted into audit_events", registers: [this.registry] });
  readonly duplicates = new Counter({ name: "audit_events_duplicates_total", help: "Redelivered events already stored with identical content (no-op)", registers: [this.registry] });
  readonly rejected = new Counter({ name: "audit_events_rejected_total", help: "Entries rejected (dead-lettered at once), by reason", labelNames: ["reason"], registers: [this.registry] });
  readonly deadLetters = new Counter({ name: "audit_dead_letters_total", help: "Entries written to caracal.audit.events.dlq, by reason", labelNames: ["reason"], registers: [this.registry] });
  readonly dlqRows = new Counter({ name: "audit_events_dlq_rows_total", help: "Entries moved to the audit_events_dlq table after AUDIT_MAX_DELIVERIES", registers: [this.registry] });
  readonly writeFailures = new Counter({ name: "audit_ledger_write_failures_total", help: "Ledger batch transactions that failed (entries left pending)", registers: [this.registry] });
  readonly batchSeconds = new Histogram({
    name: "audit_ledger_batch_seconds",
    help: "Duration of one ledger batch transaction",
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly received = new Counter({ name: "audit_entries_received_total", help: "Stream entries read", registers: [this.registry] });
  readonly acked = new Counter({ name: "audit_entries_acked_total", help: "Stream entries acknowledged", registers: [this.registry] });
  readonly reclaimed = new Counter({ name: "audit_entries_reclaimed_total", help: "Entries reclaimed with XAUTOCLAIM", registers: [this.registry] });
  readonly trimmed = new Counter({ name: "audit_entries_trimmed_total", help: "Entries trimmed while pending (acked and counted)", registers: [this.registry] });
  readonly lag = new Gauge({ name: "audit_consumer_lag", help: "Entries in the stream not yet delivered to the group", registers: [this.registry] });
  readonly pending = new Gauge({ name: "audit_consumer_pending", help: "Entries delivered to the group and not acknowledged", registers: [this.registry] });
  readonly oldestPendingAge = new Gauge({ name: "audit_pending_oldest_age_seconds", help: "Age of the oldest pending entry of the group", registers: [this.registry] });
  readonly chainBreaks = new Counter({ name: "audit_chain_breaks_total", help: "Ledger and producer-chain breaks found (ingest and sweeper), by kind", labelNames: ["kind"], registers: [this.registry] });
  readonly sweeps = new Counter({ name: "audit_tamper_sweeps_total", help: "Tamper sweeps, by outcome", labelNames: ["outcome"], registers: [this.registry] });
  readonly sweepRowsChecked = new Counter({ name: "audit_tamper_sweep_rows_total", help: "Rows re-verified by the tamper sweeper", registers: [this.registry] });
  readonly schemaDeviations = new Counter({
    name: "caracal_audit_schema_deviations_total",
    help: "Stored events that deviate from the published audit event schema, by field (WIRE §6: stored as sent, never dead-lettered)",
    labelNames: ["field"],
    registers: [this.registry],
  });
  readonly replayed = new Counter({ name: "audit_replay_events_total", help: "Events read from AUDIT_REPLAY_DIR files, by outcome", labelNames: ["outcome"], registers: [this.registry] });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Hooks for the consumer engine. */
  consumerHooks(): ConsumerMetricsHooks {
    return {
      received: (n) => this.received.inc(n),
      acked: (n) => this.acked.inc(n),
      deadLettered: (reason: DeadLetterReason, n) => this.deadLetters.inc({ reason }, n),
      reclaimed: (n) => this.reclaimed.inc(n),
      trimmed: (n) => this.trimmed.inc(n),
      lag: (n) => this.lag.set(n),
      pending: (n) => this.pending.set(n),
    };
  }
}
