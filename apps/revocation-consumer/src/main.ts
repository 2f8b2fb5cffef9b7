/**
 * Composition root of the revocation consumer: `node apps/revocation-consumer/dist/main.js` after
 * `pnpm build`. Serves /healthz, /readyz (with detail), /metrics and the revocation check routes on PORT.
 */
import "@caracal/service-kit/runtime";
import { createPool } from "@caracal/db";
import { createLogger, loadConfigOrExit, runUntilSignal } from "@caracal/service-kit";
import { closeClient, connectRedis } from "@caracal/streams-core";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Registry, collectDefaultMetrics } from "prom-client";

import { startRevocationConsumer } from "./app.js";
import { describeConfig, loadConfig } from "./config.js";

const logger = createLogger("revocation-consumer");
const config = loadConfigOrExit(logger, () => loadConfig(process.env));
logger.info({ config: describeConfig(config) }, "revocation consumer starting");

await runUntilSignal(
  logger,
  async (outerSignal) => {
    // Aborted on SIGTERM/SIGINT, and when start-up fails, so no loop outlives the connections closed below.
    const controller = new AbortController();
    outerSignal.addEventListener("abort", () => controller.abort(), { once: true });
    const signal = controller.signal;
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const pool = createPool(config.databaseUrl, { max: 6, connectionTimeoutMillis: 5_000 });
    pool.on("error", (error) => logger.warn({ err: error }, "idle PostgreSQL connection failed"));
    const redis = connectRedis(config.redisUrl, { connectionName: `${config.consumerName}:revocation` });
    redis.on("error", (error: Error) => logger.warn({ err: error }, "redis connection error"));
    const checks = new Map<string, () => boolean | Promise<boolean>>();
    const stops: Array<[string, () => Promise<void>]> = [];
    // The app's routes: registered before the first request reaches them (hono builds its matcher then).
    const http = new Hono();
    let appStarted = false;
    const ops = new Hono();
    let detail: () => Record<string, unknown> = () => ({});
    ops.get("/healthz", (c) => c.json({ status: "ok" }));
    ops.get("/readyz", async (c) => {
      const entries = await Promise.all(
        [...checks].map(async ([name, check]) => {
          try {
            return [name, await Promise.race([Promise.resolve(check()), new Promise<boolean>((r) => setTimeout(() => r(false), 2000).unref())])] as const;
          } catch {
            return [name, false] as const;
          }
        }),
      );
      const ready = entries.length > 0 && entries.every(([, ok]) => ok);
      return c.json({ status: ready ? "ready" : "not_ready", checks: Object.fromEntries(entries), detail: detail() }, ready ? 200 : 503);
    });
    ops.get("/metrics", async (c) => {
      c.header("Content-Type", registry.contentType);
      return c.body(await registry.metrics());
    });
    ops.all("*", (c) => (appStarted ? http.fetch(c.req.raw) : c.json({ error: "starting", message: "revocation state not loaded yet" }, 503)));
    const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: ops.fetch, port: config.port, hostname: "0.0.0.0" }, () => resolve(s));
      s.once("error", reject);
    });
    const address = server.address();
    logger.info({ port: typeof address === "object" && address !== null ? address.port : config.port }, "listening");
    try {
      const app = await startRevocationConsumer({
        config,
        logger,
        redis,
        pool,
        registry,
        signal,
        http,
        ready: (name, check) => checks.set(name, check),
        onStop: (name, stop) => stops.push([name, stop]),
      });
      detail = app.readinessDetail;
      appStarted = true;
      await app.done;
    } finally {
      controller.abort();
      for (const [name, stop] of stops.reverse()) await stop().catch((error: unknown) => logger.warn({ err: error, part: name }, "stop failed"));
      await new Promise<void>((r) => server.close(() => r()));
      await closeClient(redis);
      await pool.end();
      logger.info("revocation consumer stopped");
    }
  },
  { forceAfterMs: config.shutdownGraceMs + 10_000 },
);
