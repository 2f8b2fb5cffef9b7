/**
 * The service skeleton: everything a Caracal service process does besides its domain, once. A service's
 * `main.ts` is `runService({ name, loadConfig, postgres?, start })`; `start` composes its parts from the
 * context and returns once they are started. The skeleton owns: configuration (every bad variable named,
 * no value echoed; exit 1), the pino logger, Redis (single node or cluster; error logs throttled), an
 * optional PostgreSQL pool (every client with an error listener, so a dropped connection is an error of
 * the query in flight and never an unhandled 'error' event), one Prometheus registry with process
 * metrics, the ops server (`/healthz`, `/readyz` from every part's readiness, `/metrics`, the service's
 * routes), SIGTERM/SIGINT with a bounded graceful stop, and closing in reverse order of start.
 */
import { hostname } from "node:os";

import { createPool } from "@caracal/db";
import type { RedisClient } from "@caracal/streams-core";
import { closeClient, connectRedis, errorMessage } from "@caracal/streams-core";
import { Hono } from "hono";
import type { Logger } from "pino";
import type pg from "pg";
import { Registry, collectDefaultMetrics } from "prom-client";

import type { CaracalServiceSettings } from "./config.js";
import { startOpsServer } from "./http.js";
import type { OpsServer, ReadinessChecks, ReadinessVerdict } from "./http.js";
import { loadConfigOrExit } from "./lifecycle.js";
import { createLogger } from "./logger.js";
import { describeSettings } from "./secrets.js";

/** Redis and PostgreSQL connection errors are logged at most once per this interval. */
const CONNECTION_ERROR_LOG_INTERVAL_MS = 10_000;
/** After the grace time, this long for closing connections before the process exits anyway. */
const CLOSE_MARGIN_MS = 5_000;

export interface ServiceContext<C> {
  readonly name: string;
  readonly config: C;
  readonly logger: Logger;
  /** Command connection (single node or cluster). Blocking reads take their own duplicates. */
  readonly redis: RedisClient;
  /** The service's pool; throws for a service started without `postgres`. */
  readonly pool: pg.Pool;
  /** One registry for the whole process, process metrics included; served at /metrics. */
  readonly registry: Registry;
  /** Aborted on SIGTERM/SIGINT: stop reading, finish in-flight work. */
  readonly signal: AbortSignal;
  /** The service's routes, served on the ops port beside /healthz, /readyz and /metrics. */
  readonly http: Hono;
  /** Hostname-based replica name, unique per process (consumer names, lease owners). */
  readonly replica: string;
  /** Adds a readiness part: /readyz is ready only while every part (and Redis, and PostgreSQL) is. */
  ready(name: string, check: () => Promise<ReadinessVerdict> | ReadinessVerdict): void;
  /** Registers a stop, run after the signal in reverse order of registration, within the grace time. */
  onStop(name: string, stop: () => Promise<void>): void;
  /** Stops the service as SIGTERM would (a service whose work has an end: the traffic generator). */
  stop(): void;
}

export interface ServiceDefinition<C extends CaracalServiceSettings> {
  /** Logger name and Redis connection name. */
  name: string;
  loadConfig: (env: NodeJS.ProcessEnv) => C;
  /** The start-up log of the settings; default: every setting, secrets masked (`describeSettings`). */
  describeConfig?: (config: C) => Record<string, unknown>;
  /** Open a pool on `config.databaseUrl` (size from DB_MAX_CONNS and kin). Default false. */
  postgres?: boolean;
  /** Composes and starts the service's parts; returns once they run (their loops go on in the background). */
  start: (ctx: ServiceContext<C>) => Promise<void>;
}

/** Runs a service process until SIGTERM/SIGINT, then stops it cleanly; sets the exit code. */
export async function runService<C extends CaracalServiceSettings>(def: ServiceDefinition<C>): Promise<void> {
  const logger = createLogger(def.name);
  const config = loadConfigOrExit(logger, () => def.loadConfig(process.env));
  logger.info({ config: def.describeConfig?.(config) ?? describeSettings(config) }, `${def.name} starting`);

  const controller = new AbortController();
  const readiness: ReadinessChecks = {};
  const stops: Array<{ name: string; stop: () => Promise<void> }> = [];
  const throttled = (what: string) => {
    let last = 0;
    return (error: unknown) => {
      const now = Date.now();
      if (now - last < CONNECTION_ERROR_LOG_INTERVAL_MS) return;
      last = now;
      logger.warn({ err: errorMessage(error) }, what);
    };
  };

  const redis = connectRedis(config.redisUrl, { connectionName: def.name });
  redis.on("error", throttled("Redis connection error"));
  readiness.redis = async () => (await redis.ping()) === "PONG";

  let pool: pg.Pool | undefined;
  if (def.postgres) {
    const db = config.db;
    pool = createPool(config.databaseUrl, {
      application_name: def.name,
      max: db.maxConnections,
      min: db.minConnections,
      connectionTimeoutMillis: db.connectTimeoutMs,
      idleTimeoutMillis: db.idleTimeoutMs,
      maxLifetimeSeconds: Math.ceil(db.maxLifetimeMs / 1000),
    });
    const lost = throttled("PostgreSQL connection lost");
    pool.on("error", lost);
    // a client checked out (a held connection, a LISTEN) emits 'error' on itself when its connection drops
    pool.on("connect", (client) => client.on("error", lost));
    const p = pool;
    readiness.postgres = async () => (await p.query("SELECT 1")).rowCount === 1;
  }

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const http = new Hono();
  const ctx: ServiceContext<C> = {
    name: def.name,
    config,
    logger,
    redis,
    get pool(): pg.Pool {
      if (pool === undefined) throw new Error(`${def.name} was started without postgres`);
      return pool;
    },
    registry,
    signal: controller.signal,
    http,
    replica: `${hostname()}-${process.pid}`,
    ready: (name, check) => {
      readiness[name] = check;
    },
    onStop: (name, stop) => {
      stops.push({ name, stop });
    },
    stop: () => onSignal("SIGTERM"),
  };

  let forced: NodeJS.Timeout | undefined;
  function onSignal(signal: NodeJS.Signals): void {
    if (controller.signal.aborted) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    logger.info({ signal }, "stopping");
    readiness.stopping = () => ({ ready: false, detail: "stopping" });
    controller.abort();
    forced = setTimeout(() => {
      logger.error({ graceMs: config.shutdownGraceMs }, "graceful stop took too long: exiting");
      process.exit(1);
    }, config.shutdownGraceMs + CLOSE_MARGIN_MS);
    forced.unref();
  }
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  let ops: OpsServer | undefined;
  try {
    await def.start(ctx);
    ops = await startOpsServer({ port: config.port, host: config.host, registry, readiness, metricsBearer: config.metricsBearer, routes: http });
    // "<name words> running" with the port: scripts and tests wait for this line
    logger.info({ port: ops.port, host: config.host }, `${def.name.replaceAll("-", " ")} running`);
    if (!controller.signal.aborted) await new Promise<void>((resolve) => controller.signal.addEventListener("abort", () => resolve(), { once: true }));
  } catch (error) {
    logger.fatal({ err: error }, `${def.name} failed`);
    process.exitCode = 1;
    controller.abort();
  }

  // Reverse order of start: the service's parts (last registered first), then PostgreSQL, then Redis;
  // the ops server last, so /readyz says "stopping" until the end.
  for (const { name, stop } of stops.reverse()) {
    try {
      await stop();
    } catch (error) {
      logger.error({ err: error, part: name }, "stopping a part failed");
    }
  }
  await pool?.end().catch((error: unknown) => logger.warn({ err: errorMessage(error) }, "closing PostgreSQL failed"));
  await closeClient(redis).catch(() => undefined);
  await ops?.close().catch(() => undefined);
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  clearTimeout(forced);
  logger.info(`${def.name} stopped`);
}
