/**
 * `pnpm bench:audit`: the audit ingestor's throughput from a pre-filled stream of signed events to
 * committed, acknowledged rows, beside raw COPY of the same rows into the same (emptied) table in the same
 * run; then the peak RSS of an ingestor process draining a backlog. Prints a table and writes
 * bench-results/audit.json.
 *
 * Environment: DATABASE_URL (admin URL; a scratch database is created and dropped), REDIS_URL,
 * BENCH_EVENTS (default 200000), BENCH_ROUNDS (default 2: the best ingest and the best COPY of that many
 * rounds), BENCH_BACKLOG (default 1000000; 0 skips the RSS run), BENCH_ZONES
 * (default 16), AUDIT_BATCH_SIZE (default 100), AUDIT_CONCURRENCY and AUDIT_VERIFY_WORKERS (default: the
 * ingestor's),
 * BENCH_CHILD_NODE_ARGS (node flags of the draining process, e.g. --cpu-prof), BENCH_KEEP_DATABASE=1.
 */
// first, as in the service's main module: the V8 settings of every service process
import { spawn } from "node:child_process";
import { createReadStream, createWriteStream, rmSync } from "node:fs";
import { randomBytes, randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";

import { migrateDatabase } from "@caracal/db";
import type { Fields } from "@caracal/streams-core";
import { StreamPublisher, Topics, signAuditData, signaturePolicy, streamKey } from "@caracal/streams-core";
import type { BenchMetric, CpuSpent } from "@caracal/testkit/bench-report";
import { coreBoundMetrics, cpuMeter, createScratchDatabase, deletePrefix, postgresServerPid, redisServerPid, reportBench } from "@caracal/testkit/bench-report";
import { Redis } from "ioredis";
import pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { pino } from "pino";

import { startAuditIngestor } from "../src/app.js";
import { loadConfig } from "../src/config.js";
import { makeEvent } from "../src/test-support/events.js";

type Metric = BenchMetric;

const ADMIN_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const BACKLOG = Number(process.env.BENCH_BACKLOG ?? 1_000_000);
const ZONES = Number(process.env.BENCH_ZONES ?? 16);
const BATCH = process.env.AUDIT_BATCH_SIZE ?? "100";
const CONCURRENCY = process.env.AUDIT_CONCURRENCY;
const VERIFY_WORKERS = process.env.AUDIT_VERIFY_WORKERS;
// random per run; the draining child inherits them through its environment
const AUDIT_KEY_HEX = process.env.BENCH_AUDIT_KEY_HEX ?? randomBytes(32).toString("hex");
const STREAMS_KEY_HEX = process.env.BENCH_STREAMS_KEY_HEX ?? randomBytes(32).toString("hex");
const STREAM = Topics.auditEvents.stream;
const MiB = 1024 * 1024;


/** Signed frames as the audit publisher sends them (producer chain per zone, `_sig` added on XADD). */
function* frames(count: number, auditKey: Buffer): Generator<Fields> {
  const producer = randomUUID();
  const links = new Map<string, { seq: number; prev: string }>();
  const t0 = Date.now() - 3_600_000;
  for (let i = 0; i < count; i++) {
    const zone = `zone-${i % ZONES}`;
    const link = links.get(zone) ?? { seq: 0, prev: "" };
    const event = makeEvent({
      zone_id: zone,
      decision: i % 7 === 0 ? "deny" : "allow",
      metadata_json: { resource: "resource://api", trace_id: randomBytes(16).toString("hex"), subject: `agent-${i % 1000}` },
      occurred_at: new Date(t0 + i).toISOString(),
      chain: { producer, seq: link.seq + 1, prev: link.prev },
    });
    const id = event.id;
    const data = JSON.stringify(event);
    const sig = signAuditData(auditKey, data);
    links.set(zone, { seq: link.seq + 1, prev: sig });
    yield { id, data, sig };
  }
}

async function prefill(redis: Redis, keyPrefix: string, count: number, auditKey: Buffer): Promise<void> {
  const publisher = new StreamPublisher({
    redis,
    keyPrefix,
    signing: signaturePolicy({ mode: "stable", keyHex: STREAMS_KEY_HEX }),
    maxLenFor: () => count + 1_000_000,
  });
  let chunk: Fields[] = [];
  for (const f of frames(count, auditKey)) {
    chunk.push(f);
    if (chunk.length === 2000) {
      await publisher.publishBatch(chunk.map((fields) => ({ stream: STREAM, fields })));
      chunk = [];
    }
  }
  if (chunk.length > 0) await publisher.publishBatch(chunk.map((fields) => ({ stream: STREAM, fields })));
}

function env(databaseUrl: string, keyPrefix: string, consumer: string): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    AUDIT_HMAC_KEY: AUDIT_KEY_HEX,
    STREAMS_HMAC_KEY: STREAMS_KEY_HEX,
    CARACAL_MODE: "stable",
    CARACAL_KEY_PREFIX: keyPrefix,
    HOSTNAME: consumer,
    AUDIT_BATCH_SIZE: BATCH,
    ...(CONCURRENCY !== undefined ? { AUDIT_CONCURRENCY: CONCURRENCY } : {}),
    ...(VERIFY_WORKERS !== undefined ? { AUDIT_VERIFY_WORKERS: VERIFY_WORKERS } : {}),
    PORT: "0",
  };
}

async function count(pool: pg.Pool): Promise<number> {
  return (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events")).rows[0]!.n;
}

/**
 * True once every entry of the stream was delivered to the group and acknowledged (`lag` 0, nothing
 * pending). The ingestor acks an entry only after its row committed, so this is "all committed" without
 * loading PostgreSQL with a `count(*)` while it is being measured.
 */
async function drained(redis: Redis, keyPrefix: string): Promise<boolean> {
  const groups = (await redis.xinfo("GROUPS", streamKey(STREAM, keyPrefix)).catch(() => [])) as unknown[][];
  const group = groups.map((g) => Object.fromEntries(pairs(g))).find((g) => g.name === Topics.auditEvents.groups.auditIngestor);
  return group !== undefined && Number(group.lag) === 0 && Number(group.pending) === 0;
}

function pairs(flat: unknown[]): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([String(flat[i]), flat[i + 1]]);
  return out;
}

interface PhaseCost {
  seconds: number;
  cpu: CpuSpent;
}

/** Runs `phase`, measuring wall time and the CPU of this process and of PostgreSQL. */
async function measured(meter: ReturnType<typeof cpuMeter>, phase: () => Promise<void>): Promise<PhaseCost> {
  const start = meter.now();
  const t0 = performance.now();
  await phase();
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, cpu: meter.since(start) };
}

/**
 * How often the completion check (XINFO GROUPS) runs while the ingestor works. It runs in the measured
 * process: each check is a loopback round trip whose socket write costs this process CPU (a profile of
 * the 10 ms poll used before showed about 4% of the main thread's samples in it). 50 ms adds at most
 * 50 ms to a measured run of 20 s or more (0.25%).
 */
const DRAIN_POLL_MS = 50;

/** Ingests until every entry is committed and acknowledged; checks the row count once at the end. */
async function ingest(databaseUrl: string, redis: Redis, keyPrefix: string, pool: pg.Pool, expected: number): Promise<void> {
  const controller = new AbortController();
  const app = await startAuditIngestor(loadConfig(env(databaseUrl, keyPrefix, "bench-0")), { logger: pino({ level: "warn" }), signal: controller.signal, blockMs: 100 });
  while (!(await drained(redis, keyPrefix))) await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
  controller.abort();
  await app.done;
  const stored = await count(pool);
  if (stored !== expected) throw new Error(`ingest stored ${stored} rows, expected ${expected}`);
}

/** Exports the stored rows with COPY TO and empties the table; `load` then loads them with COPY FROM. */
async function prepareRawCopy(pool: pg.Pool): Promise<{ load: () => Promise<void>; done: () => void }> {
  const file = join(tmpdir(), `audit-bench-${process.pid}.copy`);
  const client = await pool.connect();
  await pipeline(client.query(copyTo("COPY audit_events TO STDOUT")), createWriteStream(file));
  await client.query("TRUNCATE audit_events");
  await client.query("CHECKPOINT");
  return {
    load: () => pipeline(createReadStream(file), client.query(copyFrom("COPY audit_events FROM STDIN"))),
    done: () => {
      client.release();
      rmSync(file, { force: true });
    },
  };
}

/** Child mode: drain the backlog in this process and report its peak RSS. */
async function drainChild(): Promise<void> {
  const [databaseUrl, keyPrefix, expectedText] = process.argv.slice(3);
  const expected = Number(expectedText);
  const redis = new Redis(REDIS_URL);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
  const t0 = performance.now();
  await ingest(databaseUrl!, redis, keyPrefix!, pool, expected);
  const seconds = (performance.now() - t0) / 1000;
  await pool.end();
  redis.disconnect();
  // Linux reports maxRSS in KiB
  process.stdout.write(`${JSON.stringify({ maxRssBytes: process.resourceUsage().maxRSS * 1024, seconds })}\n`);
}

async function main(): Promise<void> {
  const scratch = await createScratchDatabase(ADMIN_URL, "audit");
  const databaseUrl = scratch.url;
  const redis = new Redis(REDIS_URL);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const prefixes: string[] = [];
  const metrics: Metric[] = [];
  try {
    await migrateDatabase(databaseUrl);
    const auditKey = Buffer.from(AUDIT_KEY_HEX, "hex");

    // 1. ingest throughput vs raw COPY of the same rows into the same table, best of BENCH_ROUNDS each
    const meter = cpuMeter({
      postgres: postgresServerPid((await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid),
      redis: await redisServerPid(redis),
    });
    let ingested: PhaseCost | undefined;
    let copied: PhaseCost | undefined;
    for (let round = 0; round < ROUNDS; round++) {
      const p1 = `bench:audit:${randomBytes(4).toString("hex")}:`;
      prefixes.push(p1);
      await pool.query("TRUNCATE audit_events, audit_tamper_alerts");
      process.stdout.write(`round ${round + 1}/${ROUNDS}: pre-filling ${EVENTS} signed events ...\n`);
      await prefill(redis, p1, EVENTS, auditKey);
      process.stdout.write(`round ${round + 1}/${ROUNDS}: ingesting (batch ${BATCH}, concurrency ${CONCURRENCY ?? "default"}) ...\n`);
      const i = await measured(meter, () => ingest(databaseUrl, redis, p1, pool, EVENTS));
      await redis.del(streamKey(STREAM, p1));
      process.stdout.write(`round ${round + 1}/${ROUNDS}: raw COPY of the same rows ...\n`);
      const raw = await prepareRawCopy(pool);
      let c: PhaseCost;
      try {
        c = await measured(meter, raw.load);
      } finally {
        raw.done();
      }
      process.stdout.write(`round ${round + 1}/${ROUNDS}: ingest ${Math.round(EVENTS / i.seconds)}/s, COPY ${Math.round(EVENTS / c.seconds)}/s\n`);
      if (ingested === undefined || i.seconds < ingested.seconds) ingested = i;
      if (copied === undefined || c.seconds < copied.seconds) copied = c;
    }
    if (ingested === undefined || copied === undefined) throw new Error("BENCH_ROUNDS must be at least 1");
    const ingestRate = Math.round(EVENTS / ingested.seconds);
    const copyRate = Math.round(EVENTS / copied.seconds);
    metrics.push({ name: "audit ingest events/s (stream -> committed rows + XACK) vs raw COPY", value: ingestRate, unit: "events/s", baseline: copyRate, ratio: round(ingestRate / copyRate), goal: "ratio >= 0.75" });
    // Where the time goes: CPU per event of the ingestor (this process) and of PostgreSQL, beside COPY's.
    const perEvent = (s: number) => Math.round((s / EVENTS) * 1e7) / 10;
    metrics.push({ name: "ingest CPU µs/event, ingestor process (baseline: the COPY client)", value: perEvent(ingested.cpu.node), unit: "µs", baseline: perEvent(copied.cpu.node), ratio: null });
    if (ingested.cpu.postgres !== undefined && copied.cpu.postgres !== undefined) {
      metrics.push({ name: "ingest CPU µs/event, PostgreSQL (baseline: raw COPY)", value: perEvent(ingested.cpu.postgres), unit: "µs", baseline: perEvent(copied.cpu.postgres), ratio: null });
    }
    metrics.push({ name: "ingest wall µs/event (baseline: raw COPY)", value: perEvent(ingested.seconds), unit: "µs", baseline: perEvent(copied.seconds), ratio: null });
    if (ingested.cpu.redis !== undefined) metrics.push({ name: "ingest CPU µs/event, Redis server", value: perEvent(ingested.cpu.redis), unit: "µs", baseline: null, ratio: null });
    metrics.push(...(coreBoundMetrics("ingest", ingested.cpu, EVENTS, ingested.seconds, copied.seconds) ?? []));

    // 2. peak RSS draining a backlog, in a child process
    if (BACKLOG > 0) {
      await pool.query("TRUNCATE audit_events, audit_tamper_alerts");
      const p2 = `bench:audit:${randomBytes(4).toString("hex")}:`;
      prefixes.push(p2);
      process.stdout.write(`pre-filling a backlog of ${BACKLOG} events ...\n`);
      await prefill(redis, p2, BACKLOG, auditKey);
      process.stdout.write("draining it in a child process ...\n");
      const child = await runChild([fileURLToPath(import.meta.url), "--drain-child", databaseUrl, p2, String(BACKLOG)]);
      metrics.push({ name: `audit ingestor peak RSS draining ${BACKLOG} events`, value: round(child.maxRssBytes / MiB), unit: "MiB", baseline: null, ratio: null, goal: "<= 300 MiB" });
      metrics.push({ name: `audit backlog drain events/s (${BACKLOG} events)`, value: Math.round(BACKLOG / child.seconds), unit: "events/s", baseline: null, ratio: null });
    }
  } finally {
    // every key under the run's prefixes: streams, dead letters, the leaders' lease and fence keys
    for (const p of prefixes) await deletePrefix(redis, p).catch(() => undefined);
    await pool.end();
    redis.disconnect();
    // BENCH_KEEP_DATABASE=1 keeps the backlog's rows (e.g. for the EXPLAIN checks of docs/audit-ledger.md)
    if (process.env.BENCH_KEEP_DATABASE === "1") {
      process.stdout.write(`kept database ${scratch.name}\n`);
      await scratch.keep();
    } else await scratch.drop().catch(() => undefined);
  }

  reportBench("audit", metrics, { events: EVENTS, rounds: ROUNDS, backlog: BACKLOG, zones: ZONES, batch: BATCH, concurrency: CONCURRENCY ?? "default", verifyWorkers: VERIFY_WORKERS ?? "default" });
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

function runChild(args: string[]): Promise<{ maxRssBytes: number; seconds: number }> {
  return new Promise((resolvePromise, reject) => {
    // BENCH_CHILD_NODE_ARGS, e.g. "--cpu-prof", profiles the draining process
    const nodeArgs = (process.env.BENCH_CHILD_NODE_ARGS ?? "").split(" ").filter((a) => a.length > 0);
    // process.execArgv carries the TypeScript loader this bench runs under (tsx) to the child.
    const child = spawn(process.execPath, [...process.execArgv, ...nodeArgs, ...args], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, BENCH_AUDIT_KEY_HEX: AUDIT_KEY_HEX, BENCH_STREAMS_KEY_HEX: STREAMS_KEY_HEX },
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.once("exit", (code) => {
      const line = out.trim().split("\n").at(-1) ?? "";
      if (code !== 0) return reject(new Error(`drain child exited with ${code}: ${out}`));
      try {
        resolvePromise(JSON.parse(line) as { maxRssBytes: number; seconds: number });
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  });
}

if (process.argv[2] === "--drain-child") await drainChild();
else await main();
