/**
 * Composition root of the traffic generator (`node dist/main.js [--tamper <kinds>]`): audit events
 * through the audit publisher and outbox rows of every producer at set rates, until SIGTERM/SIGINT (or
 * TRAFFIC_DURATION_MS); then every buffered audit event is flushed or spilled. `--tamper` (or
 * TRAFFIC_TAMPER) forges, drops, alters or deletes events now and then (src/tamper.ts).
 */
import { parseArgs } from "node:util";

import { runService } from "@caracal/service-kit";
import { AuditPublisher, createPrometheusAuditPublisherMetrics } from "@caracal/streams-core";
import { Counter } from "prom-client";

import { describeConfig, loadConfig } from "./config.js";
import { runTamper } from "./tamper.js";
import { runTraffic } from "./traffic.js";

// `--tamper forge,alter` (or `--tamper` alone: every kind) is TRAFFIC_TAMPER given on the command line
const { values: args } = parseArgs({ options: { tamper: { type: "string" } }, strict: false, allowPositionals: true });
if (args.tamper !== undefined) process.env.TRAFFIC_TAMPER = typeof args.tamper === "string" ? args.tamper : "all";

await runService({
  name: "traffic-generator",
  loadConfig,
  describeConfig,
  postgres: true,
  async start({ config, logger, redis, pool, registry, signal, ready, onStop, stop: stopService }) {
    if (config.auditKey === undefined) logger.warn("AUDIT_HMAC_KEY is not set: CARACAL_MODE=dev, audit frames carry no sig");
    const audit = new Counter({ name: "caracal_traffic_audit_events_total", help: "Audit events handed to the audit publisher", registers: [registry] });
    const outbox = new Counter({ name: "caracal_traffic_outbox_rows_total", help: "Outbox rows committed", labelNames: ["topic"], registers: [registry] });
    const outboxErrors = new Counter({ name: "caracal_traffic_outbox_errors_total", help: "Outbox rows that could not be written", registers: [registry] });
    const publisher = new AuditPublisher({ redis, signing: config.signing, auditKey: config.auditKey, keyPrefix: config.keyPrefix, replayDir: config.replayDir, metrics: createPrometheusAuditPublisherMetrics(registry), logger });
    ready("auditPublisher", () => publisher.state === "running");
    onStop("audit publisher", () => publisher.close());
    if (!(await publisher.start())) logger.warn("replay files left by an earlier run could not be published yet; retrying in the background");
    const stop = config.durationMs > 0 ? AbortSignal.any([signal, AbortSignal.timeout(config.durationMs)]) : signal;
    const metrics = { audit: (n: number) => audit.inc(n), outbox: (topic: string) => outbox.inc({ topic }), outboxError: () => outboxErrors.inc() };
    const traffic = runTraffic({ audit: publisher, pool, auditRate: config.auditRate, outboxRate: config.outboxRate, zones: config.zones, logger, metrics }, stop).then((stats) => {
      logger.info({ ...stats, producerId: publisher.producerId }, "traffic stopped; flushing audit events");
      // TRAFFIC_DURATION_MS over: the process ends as on SIGTERM
      if (!signal.aborted) stopService();
    });
    onStop("traffic", () => traffic);
    if (config.tamper.length > 0) {
      const tampered = new Counter({ name: "caracal_traffic_tampered_total", help: "Deliberate tampering done (--tamper)", labelNames: ["kind"], registers: [registry] });
      logger.warn({ kinds: config.tamper, everyMs: config.tamperEveryMs }, "tampering is on: forged, dropped, altered or deleted events will be reported by the services");
      const tampering = runTamper(
        { kinds: config.tamper, everyMs: config.tamperEveryMs, redis, pool, keyPrefix: config.keyPrefix, auditKey: config.auditKey, zones: config.zones, logger, onTamper: (kind) => tampered.inc({ kind }) },
        stop,
      );
      onStop("tamper", () => tampering);
    }
  },
});
