/**
 * Composition root of the audit ingestor (`node dist/main.js`): the seed's start-up sequence (config,
 * connections, consumer, writer, sweeper, exporter and retention leaders, replay), the operator routes
 * `/api/audit/*` and the readiness limits, on the service skeleton.
 */
import { runService } from "@caracal/service-kit";
import { Topics } from "@caracal/streams-core";

import { auditApiRoutes } from "./api/audit-api.js";
import { watchReadinessLimits } from "./api/readiness-limits.js";
import { startAuditIngestor } from "./app.js";
import { describeConfig, loadConfig } from "./config.js";
import { AuditMetrics } from "./metrics.js";

/** How often the readiness limits sample Redis. */
const LIMITS_SAMPLE_MS = 5_000;

await runService({
  // named after its consumer group; the registry is the one place that spells it
  name: Topics.auditEvents.groups.auditIngestor,
  loadConfig,
  describeConfig,
  async start({ config, logger, registry, signal, http, ready, onStop }) {
    if (config.auditKey === undefined) logger.warn("AUDIT_HMAC_KEY is not set (CARACAL_MODE=dev): frame sig is NOT verified and hmac_chain is an unkeyed SHA-256 chain");
    const app = await startAuditIngestor(config, { logger, signal, metrics: new AuditMetrics({ registry }) });
    for (const [name, check] of Object.entries(app.readiness)) ready(name, check);
    const limits = watchReadinessLimits({ redis: app.redis, keyPrefix: config.keyPrefix, limits: config.readinessLimits, intervalMs: LIMITS_SAMPLE_MS }, signal);
    ready("limits", () => ({ ready: limits.ready(), ...(limits.reason() ? { detail: limits.reason() } : {}) }));
    http.route("/", auditApiRoutes({ pool: app.pool, redis: app.redis, signing: config.signing, keyPrefix: config.keyPrefix, adminToken: config.adminToken, logger }));
    onStop("ingestor", () => Promise.all([app.done, limits.stopped]).then(() => undefined));
  },
});
