/**
 * The revocation consumer: group `REVOCATION_GROUP` (default resource-revocation) on caracal.sessions.revoke
 * and group resource-delegation-invalidation on caracal.delegations.invalidate write `session_revocations` /
 * `delegation_epochs` and upstream's Redis keys, acking only after both; a reconcile loop rewrites missing
 * keys from the table; an in-process RevocationCache (fan-out) answers the HTTP checks of this replica.
 */
import { RevocationCache, revocationRoutes } from "@caracal/revocation-cache";
import type { ReadinessVerdict } from "@caracal/service-kit";
import type { RedisClient, TopicMessage } from "@caracal/streams-core";
import {
  StreamConsumer,
  Topics,
  countOutcomes,
  createPrometheusConsumerMetrics,
  deadLetterRejections,
  limitDeliveries,
  parseTopicSchema,
  sleep,
  verifySignature,
  type Step,
} from "@caracal/streams-core";
import type { Hono } from "hono";
import type pg from "pg";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";

import type { RevocationConfig } from "./config.js";
import { readEvictionPolicy, type EvictionPolicy } from "./eviction.js";
import { reconcileOnce } from "./reconcile.js";
import { maxEpochs, raiseEpochsInRedis, raiseEpochsInTable, revocationRows, setRevokedKeys, upsertRevocations } from "./writer.js";

/** The ServiceContext fields this app uses (service-kit's runService supplies them). */
export interface AppContext {
  config: RevocationConfig;
  logger: Logger;
  redis: RedisClient;
  pool: pg.Pool;
  registry: Registry;
  signal: AbortSignal;
  http: Hono;
  ready(name: string, check: () => ReadinessVerdict | Promise<ReadinessVerdict>): void;
  onStop(name: string, stop: () => Promise<void>): void;
}

export interface RevocationConsumerApp {
  readonly cache: RevocationCache;
  readonly eviction: EvictionPolicy;
  /** Extra /readyz detail: the eviction warning and why the cache is stale. */
  readinessDetail(): Record<string, unknown>;
  /** Settles once every loop has stopped (after the signal). */
  readonly done: Promise<void>;
}

export async function startRevocationConsumer(ctx: AppContext): Promise<RevocationConsumerApp> {
  const { config, logger, redis, pool, registry, signal } = ctx;

  const eviction = await readEvictionPolicy(redis);
  const evictionWarning =
    eviction.mayEvict === true
      ? `Redis maxmemory-policy is ${eviction.policy}: Redis may evict caracal:revoked:sessions:* keys, and an evicted key un-revokes a session for upstream readers; use noeviction`
      : eviction.mayEvict === undefined
        ? "Redis maxmemory-policy is unknown (CONFIG GET refused): make sure it is noeviction"
        : undefined;
  if (eviction.mayEvict === true) logger.error({ policy: eviction.policy }, evictionWarning);
  else if (eviction.mayEvict === undefined) logger.warn(evictionWarning);
  new Gauge({
    name: "caracal_revocation_redis_eviction_possible",
    help: "1 when Redis's maxmemory-policy can evict revocation keys, 0 when not, -1 when unknown.",
    labelNames: ["policy"],
    registers: [registry],
  }).set({ policy: eviction.policy }, eviction.mayEvict === undefined ? -1 : eviction.mayEvict ? 1 : 0);

  const applied = new Counter({ name: "caracal_revocations_applied_total", help: "Revocation entries written to the table and Redis.", registers: [registry] });
  const repaired = new Counter({ name: "caracal_revocation_keys_repaired_total", help: "Revoked-session keys rewritten by the reconcile loop.", registers: [registry] });
  const epochsApplied = new Counter({ name: "caracal_delegation_epochs_applied_total", help: "Delegation invalidation entries applied.", registers: [registry] });

  const report =
    config.reportAppliedIpc && process.send !== undefined
      ? (kind: "cache" | "keys", anchors: string[]) => process.send?.({ kind, anchors, at: Date.now() })
      : undefined;

  // Outermost first: outcome metrics, one signed dead letter per rejection (unsigned or forged entries in
  // rc/stable, schema_invalid such as an entry with no anchor), the delivery bound for writes that keep
  // failing, the `_sig` check per CARACAL_MODE, the topic's schema ("null" ids absent). The handler only
  // ever sees valid revocations.
  const steps = (): Step[] => [countOutcomes(), deadLetterRejections(), limitDeliveries(config.maxDeliveries), verifySignature(config.signing), parseTopicSchema()];

  const sessions = new StreamConsumer<TopicMessage<"sessionsRevoke">>({
    redis,
    topic: Topics.sessionsRevoke,
    group: config.group,
    consumer: config.consumerName,
    signing: config.signing,
    keyPrefix: config.keyPrefix,
    batchSize: config.batchSize,
    blockMs: config.blockMs,
    claimIdleMs: config.claimIdleMs,
    concurrency: 2,
    steps: steps(),
    graceMs: config.shutdownGraceMs,
    logger: logger.child({ stream: Topics.sessionsRevoke.stream }),
    metrics: createPrometheusConsumerMetrics(registry, { stream: Topics.sessionsRevoke.stream, group: config.group }),
    handleBatch: async (messages) => {
      const expiries = await upsertRevocations(pool, revocationRows(messages, config.ttlMs));
      await setRevokedKeys(redis, config.keyPrefix, expiries);
      applied.inc(messages.length);
      report?.("keys", expiries.map((e) => e.anchorId));
    },
  });
  const delegationGroup = Topics.delegationsInvalidate.groups.resource;
  const delegations = new StreamConsumer<TopicMessage<"delegationsInvalidate">>({
    redis,
    topic: Topics.delegationsInvalidate,
    group: delegationGroup,
    consumer: config.consumerName,
    signing: config.signing,
    keyPrefix: config.keyPrefix,
    batchSize: config.batchSize,
    blockMs: config.blockMs,
    claimIdleMs: config.claimIdleMs,
    steps: steps(),
    graceMs: config.shutdownGraceMs,
    logger: logger.child({ stream: Topics.delegationsInvalidate.stream }),
    metrics: createPrometheusConsumerMetrics(registry, { stream: Topics.delegationsInvalidate.stream, group: delegationGroup }),
    handleBatch: async (messages) => {
      const epochs = maxEpochs(messages);
      await raiseEpochsInTable(pool, epochs);
      await raiseEpochsInRedis(redis, config.keyPrefix, epochs, config.ttlMs);
      epochsApplied.inc(messages.length);
    },
  });

  const cache = new RevocationCache({
    redis,
    pool,
    signing: config.signing,
    consumer: `${config.consumerName}:cache`,
    keyPrefix: config.keyPrefix,
    ttlMs: config.ttlMs,
    reseedIntervalMs: config.reseedIntervalMs,
    maxContactAgeMs: config.maxContactAgeMs,
    maxSeedAgeMs: config.maxSeedAgeMs,
    blockMs: config.blockMs,
    registry,
    logger: logger.child({ part: "revocation-cache" }),
    ...(report === undefined ? {} : { onApplied: (entries: ReadonlyArray<{ anchors: readonly string[] }>) => report("cache", entries.flatMap((e) => [...e.anchors])) }),
  });

  const sessionsDone = sessions.run(signal);
  const delegationsDone = delegations.run(signal);
  const cacheRun = await cache.start(signal);

  const reconcile = async () => {
    if (config.reconcileIntervalMs === 0) return;
    while (await sleep(config.reconcileIntervalMs, signal)) {
      try {
        const n = await reconcileOnce(pool, redis, config.keyPrefix, config.reconcilePageRows, config.ttlMs, signal);
        if (n > 0) {
          repaired.inc(n);
          logger.warn({ repaired: n }, "reconcile rewrote revoked-session keys missing from Redis");
        }
      } catch (error) {
        logger.error({ err: error }, "reconcile failed");
      }
    }
  };
  const reconcileDone = reconcile();

  ctx.http.route("/", revocationRoutes(cache));
  ctx.ready("sessions-consumer", () => sessions.state === "running");
  ctx.ready("delegations-consumer", () => delegations.state === "running");
  ctx.ready("revocation-cache", () => (cache.fresh ? true : { ready: false, detail: cache.staleReason() ?? "not seeded yet" }));

  return {
    cache,
    eviction,
    readinessDetail: () => ({
      redisEvictionPolicy: eviction.policy,
      ...(evictionWarning === undefined ? {} : { redisEvictionWarning: evictionWarning }),
      ...(cache.staleReason() === undefined ? {} : { revocationCacheStale: cache.staleReason() }),
    }),
    done: Promise.all([sessionsDone, delegationsDone, cacheRun.done, reconcileDone]).then(() => undefined),
  };
}
