/**
 * SIEM export: group `siem-export` on `caracal.audit.events`. Each frame is verified as the audit ingestor
 * verifies it (`_sig` when present, the frame's `sig` with AUDIT_HMAC_KEY, the event's JSON; frames as
 * upstream producers really send them), then every configured sink gets the batch, in stream order.
 *
 * - A sink that is down holds the group back: the batch is retried with backoff (at most
 *   SIEM_RETRY_MAX_MS apart) until the sink takes it, and nothing after it is sent meanwhile, so no event
 *   is dropped or reordered; pending grows and `caracal_siem_sink_up` reads 0.
 * - An event a sink refuses as malformed is dead-lettered (`sink_rejected`, with the sink's answer) in
 *   the one dead-letter format of WIRE §4; the rest of the batch goes on.
 * - The batch is acknowledged once every sink has accepted it. Across a crash the export is
 *   at-least-once: a batch one sink had accepted before the crash reaches that sink again.
 */
import type { Fields, RedisClient, SignaturePolicy, StreamMessage } from "@caracal/streams-core";
import {
  RejectedMessageError,
  StreamConsumer,
  Topics,
  backoffDelayMs,
  countOutcomes,
  createPrometheusConsumerMetrics,
  deadLetterRejections,
  sleep,
  verifyAuditFrame,
  verifySignature,
} from "@caracal/streams-core";
import type { Logger } from "pino";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";

import type { SiemExportConfig } from "./config.js";
import type { ExportEvent } from "./formats.js";
import { FileSink } from "./sinks/file.js";
import { HecSink } from "./sinks/hec.js";
import { SinkDownError } from "./sinks/sink.js";
import type { Sink } from "./sinks/sink.js";
import { SyslogSink } from "./sinks/syslog.js";

export const SIEM_GROUP = Topics.auditEvents.groups.siemExport;

export interface SiemExportOptions {
  redis: RedisClient;
  registry: Registry;
  logger: Logger;
  signing: SignaturePolicy;
  /** The audit frame `sig` key (AUDIT_HMAC_KEY); undefined only in dev mode. */
  auditKey: Buffer | undefined;
  keyPrefix: string;
  consumerName: string;
  config: SiemExportConfig;
  /** Sinks to use instead of those the config names (tests, benchmarks). */
  sinks?: Sink[];
  /** Blocking read time (tests). Default 2,000 ms. */
  blockMs?: number;
  /** Syslog TLS CA as PEM (tests), instead of SIEM_SYSLOG_TLS_CA_FILE. */
  syslogCa?: string;
}

export interface SiemExport {
  readonly consumer: StreamConsumer<Fields>;
  readonly sinks: readonly Sink[];
  /** Runs until `signal` aborts, then closes the sinks. */
  run(signal: AbortSignal): Promise<void>;
}

export function sinksOf(config: SiemExportConfig, syslogCa?: string): Sink[] {
  const sinks: Sink[] = [];
  if (config.file) sinks.push(new FileSink(config.file));
  if (config.hec) sinks.push(new HecSink({ ...config.hec, timeoutMs: config.sinkTimeoutMs }));
  if (config.syslog) sinks.push(new SyslogSink({ ...config.syslog, timeoutMs: config.sinkTimeoutMs, ...(syslogCa !== undefined ? { ca: syslogCa } : {}) }));
  return sinks;
}

function siemMetrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    exported: get("caracal_siem_events_exported_total", () => new Counter({ name: "caracal_siem_events_exported_total", help: "Events a sink accepted", labelNames: ["sink"], registers: [registry] })),
    rejected: get("caracal_siem_events_rejected_total", () => new Counter({ name: "caracal_siem_events_rejected_total", help: "Events a sink refused as malformed (dead-lettered)", labelNames: ["sink"], registers: [registry] })),
    batches: get("caracal_siem_batches_total", () => new Counter({ name: "caracal_siem_batches_total", help: "Batch deliveries by sink and outcome (accepted, down)", labelNames: ["sink", "outcome"], registers: [registry] })),
    up: get("caracal_siem_sink_up", () => new Gauge({ name: "caracal_siem_sink_up", help: "1 when the sink took the last batch, 0 while it is down", labelNames: ["sink"], registers: [registry] })),
    lastSuccess: get("caracal_siem_last_success_timestamp_seconds", () => new Gauge({ name: "caracal_siem_last_success_timestamp_seconds", help: "When the sink last accepted a batch (unix seconds)", labelNames: ["sink"], registers: [registry] })),
    unverified: get("caracal_siem_events_unverified_total", () => new Counter({ name: "caracal_siem_events_unverified_total", help: "Frames refused before export (signature, JSON), dead-lettered", labelNames: ["reason"], registers: [registry] })),
  };
}

export function createSiemExport(options: SiemExportOptions): SiemExport {
  const { config, logger } = options;
  const sinks = options.sinks ?? sinksOf(config, options.syslogCa);
  const metrics = siemMetrics(options.registry);
  for (const s of sinks) metrics.up.set({ sink: s.name }, 1);

  /** Delivers to one sink, waiting out its downtime; resolves with the events it refused. */
  async function deliver(sink: Sink, events: readonly ExportEvent[], signal: AbortSignal): Promise<Map<number, string>> {
    for (let attempt = 1; ; attempt++) {
      try {
        const refused = await sink.send(events);
        metrics.batches.inc({ sink: sink.name, outcome: "accepted" });
        metrics.exported.inc({ sink: sink.name }, events.length - refused.size);
        if (refused.size > 0) metrics.rejected.inc({ sink: sink.name }, refused.size);
        metrics.up.set({ sink: sink.name }, 1);
        metrics.lastSuccess.set({ sink: sink.name }, Date.now() / 1000);
        if (attempt > 1) logger.info({ sink: sink.name, attempts: attempt }, "SIEM sink is back: batch delivered");
        return refused;
      } catch (error) {
        if (!(error instanceof SinkDownError)) throw error;
        metrics.batches.inc({ sink: sink.name, outcome: "down" });
        metrics.up.set({ sink: sink.name }, 0);
        // one line on the first failure, then every tenth: a long outage must not flood the log
        if (attempt === 1 || attempt % 10 === 0) logger.warn({ sink: sink.name, attempts: attempt, err: error.message }, "SIEM sink down: holding the export back");
        if (!(await sleep(backoffDelayMs(attempt, { baseMs: 100, capMs: config.retryMaxMs }), signal))) throw error;
      }
    }
  }

  const consumer = new StreamConsumer<Fields>({
    redis: options.redis,
    topic: Topics.auditEvents,
    group: SIEM_GROUP,
    consumer: options.consumerName,
    signing: options.signing,
    keyPrefix: options.keyPrefix,
    // outermost first: count, dead-letter rejections, check `_sig` (upstream frames have none: `sig` below)
    steps: [countOutcomes(), deadLetterRejections(), verifySignature(options.signing, { missing: "accept" })],
    startId: "0",
    batchSize: config.batchSize,
    claimIdleMs: config.claimIdleMs,
    concurrency: 1, // one batch at a time: the export keeps stream order
    ...(options.blockMs !== undefined ? { blockMs: options.blockMs } : {}),
    metrics: createPrometheusConsumerMetrics(options.registry, { stream: Topics.auditEvents.stream, group: SIEM_GROUP }),
    logger: logger.child({ part: "siem" }),
    handleBatch: async (messages: readonly StreamMessage<Fields>[], context) => {
      const failed = new Map<string, unknown>();
      const events: ExportEvent[] = [];
      for (const m of messages) {
        try {
          const verified = verifyAuditFrame(m.fields, options.auditKey);
          events.push({ entryId: m.id, event: verified.event as unknown as Record<string, unknown>, data: verified.data });
        } catch (error) {
          const rejection = error instanceof RejectedMessageError ? error : new RejectedMessageError("parse_error", String(error));
          metrics.unverified.inc({ reason: rejection.reason });
          failed.set(m.id, rejection);
        }
      }
      if (events.length > 0) {
        for (const sink of sinks) {
          const refused = await deliver(sink, events, context.signal);
          for (const [index, answer] of refused) {
            const e = events[index] as ExportEvent;
            if (!failed.has(e.entryId)) failed.set(e.entryId, new RejectedMessageError("sink_rejected", `${sink.name}: ${answer}`));
          }
        }
      }
      return failed.size > 0 ? { failed } : undefined;
    },
  });

  return {
    consumer,
    sinks,
    async run(signal) {
      try {
        await consumer.run(signal);
      } finally {
        for (const s of sinks) await s.close().catch(() => undefined);
      }
    },
  };
}
