/* global process, console, setInterval, clearInterval, performance, AbortController */
// Ad-hoc throughput check of the BUILT exporter (not a test, not CI): N rows in one hour of a database
// DATABASE_URL (already filled; see docs/audit-ledger.md), exported to an in-process s3rver; prints rows/s,
// bytes and peak RSS. Usage: DATABASE_URL=... node bench/export-throughput.mjs
import { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";
import { Registry } from "prom-client";
import { startS3 } from "@caracal/testkit";

import { createExporter } from "../dist/export/exporter.js";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const s3 = await startS3();
let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
const exporter = createExporter({
  pool, redis, logger: pino({ level: "silent" }), registry: new Registry(), settleMs: 0,
  s3Config: { endpoint: s3.endpoint, bucket: s3.bucket, region: s3.region, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } },
  pageRows: Number(process.env.PAGE_ROWS ?? 10000),
});
const t = performance.now();
const r = await exporter.exportPass({ signal: new AbortController().signal, fencingToken: Date.now() });
const ms = performance.now() - t;
clearInterval(sampler);
console.log(JSON.stringify({ rows: r.rows, files: r.files, ms: Math.round(ms), rowsPerSec: Math.round(r.rows / (ms / 1000)), peakRssMiB: Math.round(peakRss / 1048576) }));
exporter.close();
await s3.stop();
await pool.end();
redis.disconnect();
