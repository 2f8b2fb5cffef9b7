/**
 * Composition root of the observers: `node apps/observers/dist/main.js` after `pnpm build`. Serves
 * /healthz, /readyz, /metrics and the observers' routes on PORT (default 9095); runs the SIEM export
 * (group siem-export) when a sink is configured (`SIEM_*`).
 */
import { createSiemExport } from "@caracal/siem-export";
import { runService } from "@caracal/service-kit";

import { startObservers } from "./app.js";
import { describeConfig, loadConfig } from "./config.js";

await runService({
  name: "observers",
  loadConfig,
  describeConfig,
  postgres: true,
  async start(ctx) {
    const observers = await startObservers(ctx);
    ctx.onStop("observers", () => observers.done);
    const { config } = ctx;
    if (config.siem !== undefined) {
      const siem = createSiemExport({
        redis: ctx.redis,
        registry: ctx.registry,
        logger: ctx.logger,
        signing: config.signing,
        auditKey: config.auditKey,
        keyPrefix: config.keyPrefix,
        consumerName: config.consumerName,
        config: config.siem,
      });
      const done = siem.run(ctx.signal);
      ctx.ready("siem", () => siem.consumer.state === "running" || siem.consumer.state === "draining-pending");
      ctx.onStop("siem export", () => done);
    }
  },
});
