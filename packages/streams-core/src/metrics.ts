/**
 * Prometheus implementation of the consumer metrics hooks. Metric objects are registered once per
 * registry and shared by every consumer on it; each consumer writes its own `{stream, group}` labels.
 */
import { Counter, Gauge, Histogram } from "prom-client";
import type { Registry } from "prom-client";

import type { ConsumerMetricsHooks } from "./consumer/types.js";

export interface ConsumerMetricLabels {
  /** Logical stream key. */
  stream: string;
  group: string;
}

const LABELS = ["stream", "group"] as const;

function getOrCreate<M>(registry: Registry, name: string, create: () => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? create();
}

/** Every hook of the engine, so nothing it reports is lost to Prometheus (`Required`: a new hook must be added here). */
export function createPrometheusConsumerMetrics(registry: Registry, labels: ConsumerMetricLabels): Required<ConsumerMetricsHooks> {
  const registers = [registry];
  const received = getOrCreate(registry, "caracal_stream_received_total", () =>
    new Counter({ name: "caracal_stream_received_total", help: "Stream entries read (new, pending and reclaimed).", labelNames: LABELS, registers }),
  );
  const acked = getOrCreate(registry, "caracal_stream_acked_total", () =>
    new Counter({ name: "caracal_stream_acked_total", help: "Stream entries acknowledged after success.", labelNames: LABELS, registers }),
  );
  const deadLettered = getOrCreate(registry, "caracal_stream_dead_lettered_total", () =>
    new Counter({
      name: "caracal_stream_dead_lettered_total",
      help: "Stream entries dead-lettered, by reason.",
      labelNames: [...LABELS, "reason"],
      registers,
    }),
  );
  const reclaimed = getOrCreate(registry, "caracal_stream_reclaimed_total", () =>
    new Counter({ name: "caracal_stream_reclaimed_total", help: "Entries reclaimed with XAUTOCLAIM.", labelNames: LABELS, registers }),
  );
  const trimmed = getOrCreate(registry, "caracal_stream_trimmed_total", () =>
    new Counter({
      name: "caracal_stream_trimmed_total",
      help: "Entries trimmed while pending, acknowledged without handling.",
      labelNames: LABELS,
      registers,
    }),
  );
  const handlerDuration = getOrCreate(registry, "caracal_stream_handler_duration_seconds", () =>
    new Histogram({
      name: "caracal_stream_handler_duration_seconds",
      help: "Handler call duration (one message, or one batch).",
      labelNames: LABELS,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
  );
  const lag = getOrCreate(registry, "caracal_stream_lag_entries", () =>
    new Gauge({ name: "caracal_stream_lag_entries", help: "Entries not yet delivered to the group (XINFO GROUPS lag).", labelNames: LABELS, registers }),
  );
  const pending = getOrCreate(registry, "caracal_stream_pending_entries", () =>
    new Gauge({ name: "caracal_stream_pending_entries", help: "Entries delivered to the group and not acknowledged.", labelNames: LABELS, registers }),
  );
  const unverified = getOrCreate(registry, "caracal_stream_unverified_total", () =>
    new Counter({
      name: "caracal_stream_unverified_total",
      help: "dev mode only: entries handled although their _sig was missing or wrong, by result",
      labelNames: [...LABELS, "result"],
      registers,
    }),
  );
  const discarded = getOrCreate(registry, "caracal_stream_discarded_total", () =>
    new Counter({
      name: "caracal_stream_discarded_total",
      help: "Rejected entries of a stream with no dead-letter stream: acknowledged, logged and dropped, by reason",
      labelNames: [...LABELS, "reason"],
      registers,
    }),
  );
  const lastContact = getOrCreate(registry, "caracal_stream_last_contact_timestamp_seconds", () =>
    new Gauge({
      name: "caracal_stream_last_contact_timestamp_seconds",
      help: "Unix time of the consumer's last successful read from Redis (an empty read counts): freshness of per-replica caches",
      labelNames: LABELS,
      registers,
    }),
  );
  const deadLetterEntries = getOrCreate(registry, "caracal_dead_letter_entries", () =>
    new Gauge({ name: "caracal_dead_letter_entries", help: "Entries in the topic's dead-letter stream", labelNames: LABELS, registers }),
  );
  const deadLetterOldest = getOrCreate(registry, "caracal_dead_letter_oldest_age_seconds", () =>
    new Gauge({ name: "caracal_dead_letter_oldest_age_seconds", help: "Age of the oldest entry of the topic's dead-letter stream", labelNames: LABELS, registers }),
  );
  const deadLetterDropped = getOrCreate(registry, "caracal_dead_letter_dropped_unread_entries", () =>
    new Gauge({
      name: "caracal_dead_letter_dropped_unread_entries",
      help: "Dead letters removed (MAXLEN trimming of a flood, or by hand) before any group of the dead-letter stream read them",
      labelNames: LABELS,
      registers,
    }),
  );
  const deadLetterWriteFailures = getOrCreate(registry, "caracal_dead_letter_write_failures_total", () =>
    new Counter({
      name: "caracal_dead_letter_write_failures_total",
      help: "Dead letters that could not be written (their entries stay pending and come back)",
      labelNames: LABELS,
      registers,
    }),
  );
  const l = { stream: labels.stream, group: labels.group };
  return {
    received: (n) => received.inc(l, n),
    acked: (n) => acked.inc(l, n),
    deadLettered: (reason, n) => deadLettered.inc({ ...l, reason }, n),
    reclaimed: (n) => reclaimed.inc(l, n),
    trimmed: (n) => trimmed.inc(l, n),
    handlerDuration: (s) => handlerDuration.observe(l, s),
    lag: (n) => lag.set(l, n),
    pending: (n) => pending.set(l, n),
    unverified: (result, n) => unverified.inc({ ...l, result }, n),
    discarded: (reason, n) => discarded.inc({ ...l, reason }, n),
    contact: (epochMs) => lastContact.set(l, epochMs / 1000),
    deadLetterStream: (sample) => {
      deadLetterEntries.set(l, sample.length);
      deadLetterOldest.set(l, sample.oldestAgeSeconds);
      deadLetterDropped.set(l, sample.droppedUnread);
    },
    deadLetterWriteFailed: (n) => deadLetterWriteFailures.inc(l, n),
  };
}
