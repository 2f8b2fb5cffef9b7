/**
 * Composition root of the observers: `node apps/observers/dist/main.js` after `pnpm build`. Serves
 * /healthz, /readyz, /metrics and the observers' routes on PORT (default 9095).
 */
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
  },
});
