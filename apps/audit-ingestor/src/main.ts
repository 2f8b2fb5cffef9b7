/**
 * Composition root of the audit ingestor: `node apps/audit-ingestor/dist/main.js` after `pnpm build`.
 * Seed start-up sequence: parse configuration (warn without AUDIT_HMAC_KEY in dev, refuse in rc/stable),
 * connect, start the consumer, writer, sweeper, exporter, retention, replay; then listen on PORT.
 */
import { Topics } from "@caracal/streams-core";
import { createLogger, loadConfigOrExit, runUntilSignal, startOpsServer } from "@caracal/service-kit";

import { startAuditIngestor } from "./app.js";
import { describeConfig, loadConfig } from "./config.js";

// The service is named after its consumer group; the registry is the one place that spells it.
const logger = createLogger(Topics.auditEvents.groups.auditIngestor);

const cfg = loadConfigOrExit(logger, () => loadConfig(process.env));
logger.info({ config: describeConfig(cfg) }, "audit ingestor starting");
if (cfg.auditKey === undefined) {
  logger.warn("AUDIT_HMAC_KEY is not set (CARACAL_MODE=dev): frame sig is NOT verified and hmac_chain is an unkeyed SHA-256 chain");
}

await runUntilSignal(
  logger,
  async (signal) => {
    const app = await startAuditIngestor(cfg, { logger, signal });
    const ops = await startOpsServer({ port: cfg.port, registry: app.metrics.registry, readiness: app.readiness });
    logger.info({ port: ops.port }, "listening");
    await app.done;
    await ops.close();
    logger.info("audit ingestor stopped");
  },
  { forceAfterMs: cfg.shutdownGraceMs + 10_000 },
);
