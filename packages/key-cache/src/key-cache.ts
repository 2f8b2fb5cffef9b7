/**
 * A zone key cache for any Node service that verifies what a zone signs (mandates, tokens): each zone's
 * public keys held in process, loaded on first use, and dropped and reloaded when
 * `caracal.keys.invalidate` names the zone. The stream is read in **fan-out** (every replica sees every
 * invalidation; upstream's shared group `sts-keys` reloads one replica only, WIRE §1), with the engine's
 * signature checks and dead letters.
 *
 * Rules (seed 001, as for policy bundles): a reload that fails keeps the keys already held (fail-open for
 * updates: a database blip must not stop verification); a zone never loaded that fails to load has no keys
 * (fail-closed: nothing verifies). `get` answers from memory after the first load.
 */
import type { RedisClient, SignaturePolicy, TopicMessage } from "@caracal/streams-core";
import { StreamConsumer, Topics, createPrometheusConsumerMetrics } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";
import { Counter } from "prom-client";
import type { Registry } from "prom-client";

import { ZoneKeyCache } from "./zone-keys.js";
import type { ZoneKeyLoader, ZoneKeys } from "./zone-keys.js";

export interface KeyCacheOptions {
  redis: RedisClient;
  pool: pg.Pool;
  signing: SignaturePolicy;
  logger: Logger;
  /** This replica's consumer name (fan-out: position kept per replica). */
  consumerName: string;
  keyPrefix?: string;
  /** Metrics: the engine's `caracal_stream_*` and `caracal_key_cache_reload_failures_total`. */
  registry?: Registry;
  /** Where keys come from. Default: the `zone_public_keys` table. */
  load?: ZoneKeyLoader;
  /** Blocking read time. Default the engine's. */
  blockMs?: number;
}

export class KeyCache {
  readonly zones: ZoneKeyCache;
  readonly consumer: StreamConsumer<TopicMessage<"keysInvalidate">>;

  constructor(o: KeyCacheOptions) {
    const failures =
      o.registry === undefined
        ? undefined
        : ((o.registry.getSingleMetric("caracal_key_cache_reload_failures_total") as Counter | undefined) ??
          new Counter({ name: "caracal_key_cache_reload_failures_total", help: "Zone key reloads that failed (the keys held keep serving)", registers: [o.registry] }));
    this.zones = new ZoneKeyCache({ pool: o.pool, logger: o.logger, ...(o.load ? { load: o.load } : {}), onReloadFailed: () => failures?.inc() });
    const topic = Topics.keysInvalidate;
    const group = topic.groups.stsKeys;
    this.consumer = new StreamConsumer<TopicMessage<"keysInvalidate">>({
      redis: o.redis,
      topic,
      group,
      consumer: o.consumerName,
      signing: o.signing,
      keyPrefix: o.keyPrefix ?? "",
      delivery: "fanout",
      ...(o.blockMs !== undefined ? { blockMs: o.blockMs } : {}),
      logger: o.logger.child({ part: "key-cache" }),
      ...(o.registry ? { metrics: createPrometheusConsumerMetrics(o.registry, { stream: topic.stream, group }) } : {}),
      // only zones this replica holds are reloaded; others load on first use anyway
      handleBatch: async (messages) => {
        const zones = new Set(messages.map((m) => m.body.zone_id));
        await Promise.all([...zones].filter((z) => this.zones.held().includes(z)).map((z) => this.zones.invalidate(z)));
      },
    });
  }

  /** Reads invalidations until `signal` aborts. */
  run(signal: AbortSignal): Promise<void> {
    return this.consumer.run(signal);
  }

  /** The zone's keys (JWKS, body and ETag), or undefined: verify nothing for that zone then. */
  get(zoneId: string): Promise<ZoneKeys | undefined> {
    return this.zones.get(zoneId);
  }

  /** Last contact with Redis (fan-out freshness), for a readiness check. */
  get lastContactAt(): number | undefined {
    return this.consumer.lastContactAt;
  }
}
