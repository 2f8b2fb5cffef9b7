/**
 * Composition of the observers: one consumer group consumer per enabled stream, the dead-letter watch and
 * the JSON routes. Derived state lives in PostgreSQL, so replicas share it (consumer groups, not fan-out).
 */
import type { RedisClient, StreamMessage, Topic } from "@caracal/streams-core";
import type { ReadinessVerdict } from "@caracal/service-kit";
import { StreamConsumer, Topics, createPrometheusConsumerMetrics } from "@caracal/streams-core";
import type { Hono } from "hono";
import type pg from "pg";
import type { Logger } from "pino";
import type { Registry } from "prom-client";

import type { ObserversConfig } from "./config.js";
import { DeadLetterWatch } from "./dead-letters.js";
import { observerRoutes } from "./http.js";
import type { ObserverMetrics } from "./metrics.js";
import { ZoneLabels, createObserverMetrics } from "./metrics.js";
import type { StateApplier } from "./state.js";
import { StateStore, applyAgentSessions, applyDelegationEpochs, applyInvocations, applyNothing, dedupeKey, toObserved } from "./state.js";

/** The ServiceContext fields the observers use (service-kit's runService provides them). */
export interface AppContext {
  config: ObserversConfig;
  logger: Logger;
  redis: RedisClient;
  pool: pg.Pool;
  registry: Registry;
  signal: AbortSignal;
  http: Hono;
  ready(name: string, check: () => ReadinessVerdict | Promise<ReadinessVerdict>): void;
  onStop(name: string, stop: () => Promise<void>): void;
}

interface Observed {
  topic: Topic;
  group: string;
  apply: StateApplier;
  /** Zone and event of an entry (dead letters: the original zone and the reason). */
  describe(fields: Readonly<Record<string, string>>): { zone: string | undefined; event: string | undefined };
}

const plain = (f: Readonly<Record<string, string>>) => ({ zone: f.zone_id, event: f.event });

export function observedStreams(config: ObserversConfig): Observed[] {
  const out: Observed[] = [];
  if (config.enabled.agents) out.push({ topic: Topics.agentsLifecycle, group: Topics.agentsLifecycle.groups.coordinatorRelay, apply: applyAgentSessions, describe: plain });
  if (config.enabled.invocations) out.push({ topic: Topics.invocationsLifecycle, group: Topics.invocationsLifecycle.groups.observer, apply: applyInvocations, describe: plain });
  if (config.enabled.delegations) out.push({ topic: Topics.delegationsInvalidate, group: Topics.delegationsInvalidate.groups.observer, apply: applyDelegationEpochs, describe: plain });
  if (config.enabled.auditDlq) {
    out.push({
      topic: Topics.auditEventsDlq,
      group: Topics.auditEventsDlq.groups.observer,
      apply: applyNothing,
      describe: (f) => ({ zone: f["src.zone_id"] ?? f.src_zone_id, event: f.reason }),
    });
  }
  return out;
}

export interface Observers {
  consumers: StreamConsumer<unknown>[];
  watch: DeadLetterWatch | undefined;
  metrics: ObserverMetrics;
  done: Promise<void>;
}

export async function startObservers(ctx: AppContext, overrides: { blockMs?: number; startId?: string } = {}): Promise<Observers> {
  const { config, logger, redis, pool, registry, signal } = ctx;
  const store = new StateStore(pool, config.recentEventsPerStream);
  const metrics = createObserverMetrics(registry);
  const zones = new ZoneLabels(config.metricZonesMax);
  ctx.http.route("/", observerRoutes({ pool, redis, keyPrefix: config.keyPrefix }));

  const consumers: StreamConsumer<unknown>[] = [];
  for (const o of observedStreams(config)) {
    const stream = o.topic.stream;
    const consumer = new StreamConsumer<unknown>({
      redis,
      topic: o.topic,
      group: o.group,
      consumer: config.consumerName,
      signing: config.signing,
      keyPrefix: config.keyPrefix,
      delivery: "group",
      startId: overrides.startId ?? "0",
      batchSize: config.batchSize,
      blockMs: overrides.blockMs ?? 2000,
      claimIdleMs: config.claimIdleMs,
      maxDeliveries: config.maxDeliveries,
      metrics: createPrometheusConsumerMetrics(registry, { stream, group: o.group }),
      logger: logger.child({ stream, group: o.group }),
      handleBatch: async (messages: readonly StreamMessage<unknown>[]) => {
        const keyed = messages.map((m) => {
          const d = o.describe(m.fields);
          return { key: dedupeKey(stream, m.id, m.fields), event: toObserved(stream, m, d.event, d.zone) };
        });
        const fresh = await store.applyBatch(stream, keyed, o.apply);
        for (const e of fresh) metrics.events.inc({ stream, zone: zones.of(e.zoneId), event: e.event ?? "none" });
        if (fresh.length < messages.length) metrics.duplicates.inc({ stream }, messages.length - fresh.length);
      },
    });
    consumers.push(consumer);
    ctx.ready(`consumer:${stream}`, () => consumer.state === "running" || consumer.state === "draining-pending");
  }

  let watch: DeadLetterWatch | undefined;
  if (config.enabled.deadLetters) {
    watch = new DeadLetterWatch({ redis, keyPrefix: config.keyPrefix, registry, logger: logger.child({ part: "dead-letters" }), intervalMs: config.deadLetterIntervalMs });
    const w = watch;
    ctx.ready("dead-letters", () => w.ok);
  }
  ctx.ready("postgres", async () => (await pool.query("SELECT 1")).rowCount === 1);

  const done = Promise.all([...consumers.map((c) => c.run(signal)), watch?.run(signal)]).then(() => undefined);
  return { consumers, watch, metrics, done };
}
