/**
 * Composition root of the traffic generator: `node apps/traffic-generator/dist/main.js`.
 * Loads the config once, builds Redis, PostgreSQL and the audit publisher, produces traffic until
 * SIGTERM/SIGINT (or TRAFFIC_DURATION_MS), then flushes or spills every buffered audit event.
 */
import { createLogger, loadConfigOrExit, runUntilSignal, startOpsServer } from "@caracal/service-kit";
import {
  AuditPublisher,
  closeClient,
  connectRedis,
  createPrometheusAuditPublisherMetrics,
} from "@caracal/streams-core";
import pg from "pg";
import { Counter, Registry, collectDefaultMetrics } from "prom-client";

import { describeConfig, loadConfig } from "./config.js";
import { runTraffic } from "./traffic.js";

const logger = createLogger("traffic-generator");

const config = loadConfigOrExit(logger, () => loadConfig(process.env));
logger.info(describeConfig(config), "starting");
if (config.auditKey === undefined) logger.warn("AUDIT_HMAC_KEY is not set: CARACAL_MODE=dev, audit frames carry no sig");

const registry = new Registry();
collectDefaultMetrics({ register: registry });
const auditCounter = new Counter({ name: "traffic_audit_events_total", help: "Audit events handed to the audit publisher", registers: [registry] });
const outboxCounter = new Counter({ name: "traffic_outbox_rows_total", help: "Outbox rows committed", labelNames: ["topic"], registers: [registry] });
const outboxErrors = new Counter({ name: "traffic_outbox_errors_total", help: "Outbox rows that could not be written", registers: [registry] });

const redis = connectRedis(config.redisUrl, { connectionName: "traffic-generator" });
let lastRedisErrorLog = 0;
redis.on("error", (error: Error) => {
  // ioredis reports every failed reconnect; one line per 10 s is enough.
  if (Date.now() - lastRedisErrorLog > 10_000) {
    lastRedisErrorLog = Date.now();
    logger.warn({ error: error.message }, "redis connection error");
  }
});
const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 2 });
pool.on("error", (error) => logger.warn({ error: error.message }, "postgres pool error"));

const publisher = new AuditPublisher({
  redis,
  signing: config.signing,
  auditKey: config.auditKey,
  keyPrefix: config.keyPrefix,
  replayDir: config.replayDir,
  metrics: createPrometheusAuditPublisherMetrics(registry),
  logger,
});

await runUntilSignal(
  logger,
  async (signal) => {
    const ops = await startOpsServer({
      port: config.port,
      registry,
      readiness: {
        redis: async () => (await redis.ping()) === "PONG",
        postgres: async () => (await pool.query("SELECT 1")).rowCount === 1,
        auditPublisher: () => publisher.state === "running",
      },
    });
    logger.info({ port: ops.port }, "ops server listening (/healthz, /readyz, /metrics)");
    try {
      const drained = await publisher.start();
      if (!drained) logger.warn("replay files left by an earlier run could not be published yet; retrying in the background");
      const stop = config.durationMs > 0 ? AbortSignal.any([signal, AbortSignal.timeout(config.durationMs)]) : signal;
      const stats = await runTraffic(
        {
          audit: publisher,
          pool,
          auditRate: config.auditRate,
          outboxRate: config.outboxRate,
          zones: config.zones,
          logger,
          metrics: {
            audit: (n) => auditCounter.inc(n),
            outbox: (topic) => outboxCounter.inc({ topic }),
            outboxError: () => outboxErrors.inc(),
          },
        },
        stop,
      );
      logger.info({ ...stats, producerId: publisher.producerId }, "traffic stopped; flushing audit events");
    } finally {
      await publisher.close();
      await ops.close();
      await pool.end().catch(() => undefined);
      await closeClient(redis);
    }
    logger.info("stopped");
  },
  { forceAfterMs: config.shutdownGraceMs },
);
