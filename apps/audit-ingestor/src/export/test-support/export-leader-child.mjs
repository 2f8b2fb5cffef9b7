/* global AbortController */
// Child process of the export take-over test: runs the BUILT exporter (dist) as a real replica would,
// competing for the export lease. When it reaches the hour PAUSE_HOUR (after the object is in S3, before
// the fenced commit) it prints "paused <hour>" and hangs there, still renewing its lease, until killed.
import process from "node:process";

import { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";
import { Registry } from "prom-client";

import { createExporter } from "../../../dist/export/exporter.js";

const env = process.env;
const pool = new pg.Pool({ connectionString: env.DATABASE_URL, max: 4 });
pool.on("error", () => undefined);
const redis = new Redis(env.REDIS_URL);
redis.on("error", () => undefined);

const exporter = createExporter({
  pool,
  redis,
  s3Config: JSON.parse(env.S3_CONFIG),
  logger: pino({ level: "silent" }),
  registry: new Registry(),
  leaseKeyPrefix: env.KEY_PREFIX,
  leaseTtlMs: Number(env.LEASE_TTL_MS),
  intervalMs: 100,
  settleMs: 0,
  pageRows: 50,
  beforeCommit: async (hour) => {
    if (hour.toISOString() !== env.PAUSE_HOUR) return;
    process.stdout.write(`paused ${hour.toISOString()}\n`);
    await new Promise(() => undefined);
  },
});
exporter.run(new AbortController().signal).catch((error) => {
  process.stderr.write(`${error}\n`);
  process.exit(2);
});
