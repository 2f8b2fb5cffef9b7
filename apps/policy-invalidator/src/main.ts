/** Composition root of the policy invalidator (`node dist/main.js`): bundles and keys per zone, fan-out. */
import { KeyCache } from "@caracal/key-cache";
import { runService } from "@caracal/service-kit";
import type { TopicMessage } from "@caracal/streams-core";
import { StreamConsumer, Topics, createPrometheusConsumerMetrics } from "@caracal/streams-core";

import { ZoneBundler } from "./bundler.js";
import { describeConfig, loadConfig } from "./config.js";
import { etagMatches } from "./routes.js";
import { createPolicyMetrics } from "./metrics.js";
import { bundleRoutes } from "./routes.js";
import { bundleSignerOf } from "./signer.js";
import { BundleStore } from "./store.js";

await runService({
  name: "policy-invalidator",
  loadConfig,
  describeConfig,
  postgres: true,
  async start({ config, logger, redis, pool, registry, signal, http, replica, ready, onStop }) {
    const store = new BundleStore();
    const metrics = createPolicyMetrics(registry, store);
    const bundler = new ZoneBundler({ pool, store, logger, metrics, signer: await bundleSignerOf(config) });
    // each zone's public keys for the JWKS route: the key cache library any service uses (fan-out)
    const keyCache = new KeyCache({ redis, pool, signing: config.signing, logger, consumerName: replica, keyPrefix: config.keyPrefix, registry });
    const keys = keyCache.zones;

    const policyTopic = Topics.policyInvalidate;
    const policyConsumer = new StreamConsumer<TopicMessage<"policyInvalidate">>({
      redis, topic: policyTopic, group: policyTopic.groups.opaEngine, consumer: replica, signing: config.signing, keyPrefix: config.keyPrefix,
      delivery: "fanout", // every replica serves every zone's bundle
      // the handler never throws for a zone: a failed build is logged, counted, and left to the old bundle
      handleBatch: async (messages) => {
        const zones = new Set(messages.map((m) => m.body.zone_id));
        await Promise.all([...zones].map((z) => bundler.refresh(z)));
      },
      metrics: createPrometheusConsumerMetrics(registry, { stream: policyTopic.stream, group: policyTopic.groups.opaEngine }),
      logger,
    });
    http.route("/", bundleRoutes({ store, maxWaitMs: config.longPollMaxMs, onMissingZone: (zone) => bundler.refresh(zone) }));
    http.get("/v1/zones/:zone/jwks.json", async (c) => {
      const zoneKeys = await keys.get(c.req.param("zone"));
      if (zoneKeys === undefined) return c.json({ error: "zone signing key not found" }, 404);
      if (etagMatches(c.req.header("If-None-Match"), zoneKeys.etag)) return c.body(null, 304, { ETag: zoneKeys.etag });
      return c.body(zoneKeys.body, 200, { ETag: zoneKeys.etag, "Content-Type": "application/json", "Cache-Control": "public, max-age=300, must-revalidate" });
    });

    const policyDone = policyConsumer.run(signal);
    const keysDone = keyCache.run(signal);
    // first sync and the reconcile timer run in the background: readiness waits for them
    let reconciling: Promise<void> = Promise.resolve();
    const reconcile = () => {
      reconciling = reconciling
        .then(async () => {
          await bundler.reconcile();
          await Promise.all(keys.held().map((z) => keys.invalidate(z)));
        })
        .catch((error: unknown) => logger.warn({ err: error instanceof Error ? error.message : String(error) }, "reconcile failed"));
    };
    reconcile();
    const timer = setInterval(reconcile, config.reconcileIntervalMs);
    ready("consumers", () => policyConsumer.state === "running" && keyCache.consumer.state === "running");
    ready("bundles", async () => {
      const missing = await bundler.unservedBoundZones();
      return missing.length === 0 ? true : { ready: false, detail: `${missing.length} bound zone(s) without a bundle yet` };
    });
    onStop("reconcile", async () => {
      clearInterval(timer);
      await reconciling;
    });
    onStop("consumers", async () => {
      await Promise.all([policyConsumer.close(), keyCache.consumer.close()]);
      await Promise.all([policyDone, keysDone]);
    });
  },
});
