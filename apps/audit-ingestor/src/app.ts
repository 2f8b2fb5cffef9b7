/**
 * Builds and runs the audit ingestor from a validated config (the seed's start-up sequence, steps 2-9):
 * connect PostgreSQL and Redis; start the consumer (group `audit-ingestor`, own pending entries first);
 * the ledger writer; the tamper sweeper; the exporter and retention leaders (when their modules are wired);
 * the replay of AUDIT_REPLAY_DIR. `main.ts` adds the HTTP server (step 10) and signal handling; tests run
 * several instances in one process.
 */
import { createPool } from "@caracal/db";
import type { Fields, RedisClient } from "@caracal/streams-core";
import {
  DeadLetterWriter,
  sleep,
  StreamConsumer,
  Topics,
  closeClient,
  connectRedis,
  countOutcomes,
  deadLetterRejections,
  streamKey,
  verifySignature,
} from "@caracal/streams-core";
import type { Logger } from "pino";
import type pg from "pg";

import type { AuditConfig } from "./config.js";
import { createAuditBatchHandler } from "./ingest/handler.js";
import { inThreadVerifier } from "./ingest/verify.js";
import { VerifyPool } from "./ingest/verify-pool.js";
import { LedgerWriter } from "./ledger/writer.js";
import { AuditMetrics } from "./metrics.js";
import { runLeaders } from "./export/leaders.js";
import { replayDirectory } from "./replay/replay-dir.js";
import { startSweeper } from "./sweeper/tamper-sweeper.js";

export interface AuditIngestor {
  readonly consumer: StreamConsumer<Fields>;
  readonly metrics: AuditMetrics;
  readonly pool: pg.Pool;
  readonly redis: RedisClient;
  /** Readiness checks for /readyz: consumer running (pending drained), PostgreSQL and Redis reachable. */
  readonly readiness: Record<string, () => Promise<boolean> | boolean>;
  /** Resolves once the replay directory has been drained (immediately when there is none). */
  readonly replayed: Promise<void>;
  /** Resolves when everything has stopped (after the signal). */
  readonly done: Promise<void>;
}

const TOPIC = Topics.auditEvents;
const REPLAY_RETRY_MS = 5_000;
const PENDING_SAMPLE_MS = 5_000;


export async function startAuditIngestor(
  config: AuditConfig,
  options: {
    logger: Logger;
    signal: AbortSignal;
    metrics?: AuditMetrics;
    blockMs?: number;
    claimIntervalMs?: number;
    /** Test hook: called after each batch is committed, before its ack (crash tests kill the process there). */
    afterBatchWrite?: () => void;
  },
): Promise<AuditIngestor> {
  const { logger, signal } = options;
  const metrics = options.metrics ?? new AuditMetrics();
  const pool = createPool(config.databaseUrl, { max: config.concurrency + 4, connectionTimeoutMillis: 5_000 });
  // a broken idle connection must not crash the process; queries on it fail and are retried
  pool.on("error", (error) => logger.warn({ err: error }, "idle PostgreSQL connection failed"));
  // a connection lost while checked out also emits "error" on its client; the query in flight rejects
  pool.on("connect", (client) => client.on("error", (error) => logger.warn({ err: error }, "PostgreSQL connection lost")));
  const redis = connectRedis(config.redisUrl, { connectionName: `${config.consumerName}:audit` });
  redis.on("error", (error: Error) => logger.warn({ err: error }, "redis connection error"));

  // The ledger writer has its own two connections: group commit runs one transaction at a time up to its
  // COMMIT, and sends the next one's locks and reads while that COMMIT runs (LedgerWriter overlapCommits).
  const writerPool = createPool(config.databaseUrl, { max: 2, connectionTimeoutMillis: 5_000 });
  writerPool.on("error", (error) => logger.warn({ err: error }, "idle PostgreSQL connection failed"));
  writerPool.on("connect", (client) => client.on("error", (error) => logger.warn({ err: error }, "PostgreSQL connection lost")));
  const writer = new LedgerWriter({ pool: writerPool, auditKey: config.auditKey });
  const verifier = config.verifyWorkers > 0 ? new VerifyPool(config.verifyWorkers, config.auditKey, logger) : inThreadVerifier(config.auditKey);
  const consumer = new StreamConsumer<Fields>({
    redis,
    topic: TOPIC,
    group: TOPIC.groups.auditIngestor,
    consumer: config.consumerName,
    signing: config.signing,
    // The audit stream's steps, outermost first. No parse step: the handler verifies each frame (`sig`,
    // JSON, event schema, content hash; see verify.ts). No delivery bound: the handler owns exhaustion
    // (after AUDIT_MAX_DELIVERIES it writes the audit_events_dlq row and acks; if that write fails the
    // entry must stay pending: no ack without a durable record).
    steps: [
      countOutcomes(),
      deadLetterRejections(),
      // upstream frames `{id,data,sig}` carry no `_sig`; `sig` authenticates them (WIRE §6)
      verifySignature(config.signing, { missing: "accept" }),
    ],
    handleBatch: createAuditBatchHandler({ writer, verifier, pool, stream: TOPIC.stream, maxDeliveries: config.maxDeliveries, metrics, logger, afterWrite: options.afterBatchWrite }),
    keyPrefix: config.keyPrefix,
    // a new group starts at the beginning of the stream: audit events published before the first
    // ingestor started are part of the ledger
    startId: "0",
    batchSize: config.batchSize,
    maxInFlightBytes: config.maxInFlightBytes,
    claimIdleMs: config.claimIdleMs,
    claimIntervalMs: options.claimIntervalMs ?? config.claimIdleMs,
    ...(options.blockMs !== undefined ? { blockMs: options.blockMs } : {}),
    concurrency: config.concurrency,
    graceMs: config.shutdownGraceMs,
    metrics: metrics.consumerHooks(),
    logger,
  });
  const consumerDone = consumer.run(signal).catch((error: unknown) => logger.error({ err: error }, "audit consumer failed"));

  const sweeper = startSweeper(
    { pool, auditKey: config.auditKey, rollingHours: config.sweep.rollingHours, gapGraceMs: config.sweep.gapGraceMs, intervalMs: config.sweep.intervalMs, metrics, logger },
    signal,
  );

  // S3 export (when configured) and retention, each only on the holder of its Redis lease
  const leaders = runLeaders(
    {
      pool,
      redis,
      logger,
      registry: metrics.registry,
      keyPrefix: config.keyPrefix,
      leaseTtlMs: config.leaderLeaseTtlMs,
      ...(config.export !== undefined
        ? { export: { s3Config: config.export.s3, intervalMs: config.export.intervalMs, settleMs: config.export.settleMs, pageRows: config.export.pageRows } }
        : {}),
      retention: { days: config.retention.days, intervalMs: config.retention.intervalMs, maxDeliveries: config.maxDeliveries },
    },
    signal,
  ).catch((error: unknown) => logger.error({ err: error }, "export/retention leaders failed"));

  const pendingAge = (async () => {
    const key = streamKey(TOPIC.stream, config.keyPrefix);
    do {
      try {
        const summary = (await redis.xpending(key, TOPIC.groups.auditIngestor)) as [number, string | null, string | null, unknown];
        const oldest = summary[1];
        metrics.oldestPendingAge.set({ stream: TOPIC.stream, group: TOPIC.groups.auditIngestor }, oldest ? Math.max(0, (Date.now() - Number(oldest.split("-")[0])) / 1000) : 0);
      } catch {
        // the group may not exist yet, or Redis is away: the consumer reports that
      }
    } while (await sleep(PENDING_SAMPLE_MS, signal));
  })();

  const replayed = (async () => {
    if (config.replayDir === undefined) return;
    const deadLetters = new DeadLetterWriter({ redis, signing: config.signing, keyPrefix: config.keyPrefix });
    for (;;) {
      try {
        const s = await replayDirectory({
          dir: config.replayDir,
          writer,
          auditKey: config.auditKey,
          deadLetters,
          group: TOPIC.groups.auditIngestor,
          consumer: config.consumerName,
          batchSize: config.batchSize,
          metrics,
          logger,
        });
        if (s.files > 0) logger.info(s, "replay directory ingested");
        if (s.kept.length === 0) return;
      } catch (error) {
        logger.error({ err: error }, "replay directory could not be read");
      }
      if (!(await sleep(REPLAY_RETRY_MS, signal))) return;
    }
  })();

  const done = (async () => {
    await consumerDone;
    await Promise.allSettled([sweeper.stopped, pendingAge, replayed, leaders]);
    await closeClient(redis);
    await pool.end().catch(() => undefined);
    await writerPool.end().catch(() => undefined);
    await verifier.close();
  })();

  return {
    consumer,
    metrics,
    pool,
    redis,
    replayed,
    done,
    readiness: {
      consumer: () => consumer.state === "running",
      postgres: async () => (await pool.query("SELECT 1")).rowCount === 1,
      redis: async () => (await redis.ping()) === "PONG",
    },
  };
}
