/**
 * Composition root of the outbox dispatcher: load config once, build dependencies, run until SIGTERM or
 * SIGINT, stop cleanly (finish and mark the in-flight batch, close connections).
 */
import { randomBytes } from "node:crypto";

import { createPool } from "@caracal/db";
import { OUTBOX_CHANNEL } from "@caracal/outbox";
import { createLogger, loadConfigOrExit, runUntilSignal, startOpsServer } from "@caracal/service-kit";
import { StreamPublisher, closeClient, connectRedis, errorMessage } from "@caracal/streams-core";

import { describeConfig, loadConfig } from "./config.js";
import { OutboxDispatcher } from "./dispatcher.js";
import { NotifyListener } from "./listener.js";
import { createMetrics } from "./metrics.js";
import { RetentionSweeper } from "./retention.js";

const logger = createLogger("outbox-dispatcher");

const config = loadConfigOrExit(logger, () => loadConfig(process.env));
logger.info({ config: describeConfig(config) }, "starting outbox dispatcher");

const pool = createPool(config.databaseUrl, { application_name: "outbox-dispatcher" });
pool.on("error", (error) => logger.warn({ err: errorMessage(error) }, "idle PostgreSQL connection failed"));
const redis = connectRedis(config.redisUrl, { connectionName: "outbox-dispatcher" });
let lastRedisErrorAt = 0;
redis.on("error", (error: Error) => {
  if (Date.now() - lastRedisErrorAt < 5_000) return;
  lastRedisErrorAt = Date.now();
  logger.warn({ err: errorMessage(error) }, "Redis connection error");
});

const streamMaxLen = config.streamMaxLen;
const publisher = new StreamPublisher({ redis, signing: config.signing, keyPrefix: config.keyPrefix, maxLenFor: () => streamMaxLen });
const metrics = createMetrics(pool, { defaultMetrics: true });
const owner = `${config.hostname}-${process.pid}-${randomBytes(3).toString("hex")}`;
const dispatcher = new OutboxDispatcher({
  pool,
  publisher,
  redis,
  metrics,
  logger,
  owner,
  batchSize: config.batchSize,
  pollMs: config.pollMs,
  maxAttempts: config.maxAttempts,
  leaseMs: config.leaseMs,
  publishTimeoutMs: config.publishTimeoutMs,
  backoffBaseMs: config.backoffBaseMs,
});
const listener = new NotifyListener({ connectionString: config.databaseUrl, channel: OUTBOX_CHANNEL, onWake: () => dispatcher.wake(), logger });
const sweeper = new RetentionSweeper({ pool, logger, ...config.retention });

const ops = await startOpsServer({
  port: config.port,
  registry: metrics.registry,
  readiness: {
    postgres: async () => (await pool.query("SELECT 1")).rowCount === 1,
    redis: async () => (await redis.ping()) === "PONG",
    dispatcher: () => dispatcher.state === "running",
  },
});
logger.info({ port: ops.port, owner }, "outbox dispatcher running");

await runUntilSignal(
  logger,
  async (signal) => {
    listener.start();
    sweeper.start();
    await dispatcher.run(signal);
  },
  { forceAfterMs: config.shutdownGraceMs },
);

await listener.close();
await sweeper.stop();
await ops.close();
await closeClient(redis);
await pool.end();
logger.info("outbox dispatcher stopped");
