/**
 * Composition root of the outbox dispatcher (`node dist/main.js`): claim, sign, XADD, mark; retention;
 * and the drain of upstream's second outbox, caracal_outbox.
 */
import { OUTBOX_CHANNEL } from "@caracal/outbox";
import { runService } from "@caracal/service-kit";
import { StreamPublisher } from "@caracal/streams-core";

import { CoordinatorOutboxDrain } from "./coordinator-outbox.js";
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
    // upstream's second outbox (its Coordinator's): polled, upstream producers do not NOTIFY
    const coordinator = new CoordinatorOutboxDrain({ ...config, pool, publisher, redis, metrics, registry, logger });
    const listener = new NotifyListener({ connectionString: config.databaseUrl, channel: OUTBOX_CHANNEL, onWake: () => { dispatcher.wake(); coordinator.wake(); }, logger });
    const sweeper = new RetentionSweeper({ pool, logger, ...config.retention });
    listener.start();
    sweeper.start();
    const running = dispatcher.run(signal);
    const draining = coordinator.run(signal);
    ready("dispatcher", () => dispatcher.state === "running");
    onStop("dispatcher", () => running);
    onStop("caracal_outbox drain", () => draining);
    onStop("listener", () => listener.close());
    onStop("retention", () => sweeper.stop());
  },
});
