/** Composition root of the outbox dispatcher (`node dist/main.js`): claim, sign, XADD, mark; retention. */
import { OUTBOX_CHANNEL } from "@caracal/outbox";
import { runService } from "@caracal/service-kit";
import { StreamPublisher } from "@caracal/streams-core";

import { loadConfig } from "./config.js";
import { OutboxDispatcher } from "./dispatcher.js";
import { NotifyListener } from "./listener.js";
import { createMetrics } from "./metrics.js";
import { RetentionSweeper } from "./retention.js";

await runService({
  name: "outbox-dispatcher",
  loadConfig,
  postgres: true,
  async start({ config, logger, redis, pool, registry, signal, replica, ready, onStop }) {
    const publisher = new StreamPublisher({ redis, signing: config.signing, keyPrefix: config.keyPrefix, maxLenFor: () => config.streamMaxLen });
    const metrics = createMetrics(pool, { registry });
    const dispatcher = new OutboxDispatcher({ ...config, pool, publisher, redis, metrics, logger, owner: `${config.hostname}-${replica}` });
    const listener = new NotifyListener({ connectionString: config.databaseUrl, channel: OUTBOX_CHANNEL, onWake: () => dispatcher.wake(), logger });
    const sweeper = new RetentionSweeper({ pool, logger, ...config.retention });
    listener.start();
    sweeper.start();
    const running = dispatcher.run(signal);
    ready("dispatcher", () => dispatcher.state === "running");
    onStop("dispatcher", () => running);
    onStop("listener", () => listener.close());
    onStop("retention", () => sweeper.stop());
  },
});
