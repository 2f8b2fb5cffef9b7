import { Counter, Gauge, Histogram } from "prom-client";
import type { Registry } from "prom-client";

import type { AuditPublisherMetricsHooks } from "./publisher.js";

/**
 * prom-client implementation of the audit publisher hooks, registered on `registry`:
 * `caracal_audit_publisher_{published,spilled,replayed}_events_total`, `..._buffer_depth` and
 * `..._batch_seconds` (one pipelined XADD round trip).
 */
export function createPrometheusAuditPublisherMetrics(registry: Registry, prefix = "caracal_audit_publisher_"): AuditPublisherMetricsHooks {
  const published = new Counter({ name: `${prefix}published_events_total`, help: "Audit events XADDed from live batches", registers: [registry] });
  const spilled = new Counter({ name: `${prefix}spilled_events_total`, help: "Audit events written to the replay directory", registers: [registry] });
  const replayed = new Counter({ name: `${prefix}replayed_events_total`, help: "Audit events re-published from replay files", registers: [registry] });
  const depth = new Gauge({ name: `${prefix}buffer_depth`, help: "Audit events held in memory (buffered + in flight)", registers: [registry] });
  const batch = new Histogram({
    name: `${prefix}batch_seconds`,
    help: "Duration of one pipelined XADD batch",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  return {
    published: (n) => published.inc(n),
    spilled: (n) => spilled.inc(n),
    replayed: (n) => replayed.inc(n),
    bufferDepth: (n) => depth.set(n),
    batchSent: (_size, seconds) => batch.observe(seconds),
  };
}
