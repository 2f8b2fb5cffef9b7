/**
 * Composition root of the revocation consumer: `node apps/revocation-consumer/dist/main.js` after
 * `pnpm build`. Serves /healthz, /readyz (with the eviction warning and the cache's staleness as detail),
 * /metrics and the revocation check routes on PORT (default 9093).
 */
import { runService } from "@caracal/service-kit";

import { startRevocationConsumer } from "./app.js";
import { describeConfig, loadConfig } from "./config.js";

await runService({
  name: "revocation-consumer",
  loadConfig,
  describeConfig,
  postgres: true,
  async start(ctx) {
    const app = await startRevocationConsumer(ctx);
    ctx.ready("redis-eviction-policy", () => {
      // an eviction-prone Redis is reported, not fatal: the table stays the truth and reconcile repairs keys
      const warning = app.readinessDetail().redisEvictionWarning;
      return { ready: true, detail: typeof warning === "string" ? warning : `maxmemory-policy ${app.eviction.policy}` };
    });
    ctx.onStop("revocation loops", () => app.done);
  },
});
