/**
 * Composition root of the observers: `node apps/observers/dist/main.js` after `pnpm build`.
 * Until service-kit's runService exists, this builds the AppContext by hand: one Hono app serving
 * /healthz, /readyz, /metrics and the observers' routes on PORT (default 9095).
 */
// first: V8 settings of every service process (see the module)
import "@caracal/service-kit/runtime";
import { serve } from "@hono/node-server";
import { closeClient, connectRedis } from "@caracal/streams-core";
import { createLogger, loadConfigOrExit, runUntilSignal } from "@caracal/service-kit";
import { Hono } from "hono";
import pg from "pg";
import { Registry, collectDefaultMetrics } from "prom-client";

import { startObservers } from "./app.js";
import { describeConfig, loadConfig } from "./config.js";

const logger = createLogger("observers");
const cfg = loadConfigOrExit(logger, () => loadConfig(process.env));
logger.info({ config: describeConfig(cfg) }, "observers starting");

await runUntilSignal(
  logger,
  async (signal) => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const redis = connectRedis(cfg.redisUrl);
    const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: 8 });
    const checks = new Map<string, () => boolean | Promise<boolean>>();
    const stops: { name: string; stop: () => Promise<void> }[] = [];
    const http = new Hono();
    http.get("/healthz", (c) => c.json({ status: "ok" }));
    http.get("/readyz", async (c) => {
      const entries = await Promise.all([...checks].map(async ([name, check]) => [name, await Promise.resolve(check()).catch(() => false)] as const));
      const ready = entries.every(([, ok]) => ok);
      return c.json({ status: ready ? "ready" : "not_ready", checks: Object.fromEntries(entries) }, ready ? 200 : 503);
    });
    http.get("/metrics", async (c) => {
      c.header("Content-Type", registry.contentType);
      return c.body(await registry.metrics());
    });
    const app = await startObservers({
      config: cfg,
      logger,
      redis,
      pool,
      registry,
      signal,
      http,
      ready: (name, check) => checks.set(name, check),
      onStop: (name, stop) => stops.push({ name, stop }),
    });
    const server = serve({ fetch: http.fetch, port: cfg.port, hostname: "0.0.0.0" });
    logger.info({ port: cfg.port }, "listening");
    await app.done;
    for (const s of stops.reverse()) await s.stop().catch((err: unknown) => logger.error({ err, part: s.name }, "stop failed"));
    await new Promise<void>((done) => server.close(() => done()));
    await pool.end();
    await closeClient(redis);
    logger.info("observers stopped");
  },
  { forceAfterMs: cfg.shutdownGraceMs + 10_000 },
);
