/**
 * `pnpm bench:gc`: what the dispatcher's round trips cost V8's young-generation collector, each way of
 * doing them beside the other. Every variant runs in its own child process under `--trace-gc-nvp`; the
 * bench reads V8's own figures for every scavenge during the measured loop (bytes that survived it, bytes
 * promoted to the old generation, pause) and the child's CPU time. Prints a table and writes
 * bench-results/gc.json.
 *
 * Cases (BENCH_ROUNDS runs of each variant, alternating; the run with the least CPU per item is reported):
 * - redis: batches of 32 encoded XADDs (the publisher's), one in flight, sent as an ioredis
 *   `Pipeline` (baseline) or by streams-core's `sendCommands`;
 * - pg: a query returning 32 rows of about 300 bytes (the claim's shape), through node-postgres's promise
 *   form (baseline) or `queryResult` from @caracal/db;
 * - drain: the outbox dispatcher draining BENCH_ROWS (default 20000) rows, with V8's defaults (baseline)
 *   or with the V8 flags every service process is started with (`SERVICE_NODE_FLAGS`: the images' and
 *   scripts' `node` command line).
 *
 * Environment: DATABASE_URL (admin URL; the drain creates and drops a scratch database), REDIS_URL,
 * BENCH_ROUNDS (default 3), BENCH_ROWS (default 20000).
 */
import { spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

import { createPool, migrateDatabase, queryResult } from "@caracal/db";
import { EncodedCommand, RespWriter, StreamPublisher, StreamSigner, Topics, encodeXadd, sendCommands } from "@caracal/streams-core";
import type { BenchMetric } from "@caracal/testkit/bench-report";
import { createScratchDatabase, deletePrefix, plainMetric, ratioMetric, reportBench, revocationFields } from "@caracal/testkit/bench-report";
import { Pipeline, Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";

import { OutboxDispatcher } from "../src/dispatcher.js";
import { createMetrics } from "../src/metrics.js";
import { insertPending, untilDispatched } from "./support.js";

/** The V8 flags of every service process, as infra/Dockerfile and scripts/*.sh pass them to `node`. */
const SERVICE_NODE_FLAGS = ["--no-allocation-site-pretenuring"] as const;

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const ROWS = Number(process.env.BENCH_ROWS ?? 20_000);
const BATCH = 32;
const REDIS_BATCHES = 3000;
const PG_QUERIES = 10_000;

interface Case {
  name: string;
  unit: string;
  baseline: { variant: string; label: string };
  measured: { variant: string; label: string };
}

const CASES: readonly Case[] = [
  {
    name: `redis: batches of ${BATCH} XADDs`,
    unit: "command",
    baseline: { variant: "redis-pipeline", label: "ioredis Pipeline" },
    measured: { variant: "redis-send-commands", label: "sendCommands" },
  },
  {
    name: `pg: queries of ${BATCH} rows x 300 bytes`,
    unit: "query",
    baseline: { variant: "pg-promise", label: "client.query promise" },
    measured: { variant: "pg-query-result", label: "queryResult" },
  },
  {
    name: `drain: dispatcher, ${ROWS} rows`,
    unit: "row",
    baseline: { variant: "drain-default", label: "V8 defaults" },
    measured: { variant: "drain-runtime", label: "service runtime settings" },
  },
];

const START = "BENCH-LOOP-START";
const END = "BENCH-LOOP-END";

/** Prints START before and END (with CPU µs and item count) after the measured loop. */
async function measured(items: number, loop: () => Promise<void>): Promise<void> {
  process.stdout.write(`${START}\n`);
  const cpu0 = process.cpuUsage();
  await loop();
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(`${END} ${JSON.stringify({ cpuMicros: cpu.user + cpu.system, items })}\n`);
}

async function redisChild(viaPipeline: boolean): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
  const key = `bench:gc:${randomBytes(4).toString("hex")}`;
  const writer = new RespWriter();
  const batch = () =>
    Array.from({ length: BATCH }, (_, i) => {
      const fields = { outbox_id: `id-${i}`, zone_id: randomUUID(), reason: "session_revoked_by_admin", session_id: randomUUID(), grant_id: randomUUID() };
      return new EncodedCommand("xadd", key, encodeXadd(writer, key, 10_000, fields, [{ field: "_sig", value: "0".repeat(64) }]));
    });
  const send = async (commands: EncodedCommand[]) => {
    if (viaPipeline) {
      const pipeline = new Pipeline(redis);
      for (const command of commands) pipeline.sendCommand(command);
      const results = await pipeline.exec();
      if (results === null || results.some(([error]) => error)) throw new Error("an XADD failed");
    } else if ((await sendCommands(redis, commands)).some(([error]) => error)) throw new Error("an XADD failed");
  };
  for (let i = 0; i < 200; i++) await send(batch()); // warm-up
  await measured(REDIS_BATCHES * BATCH, async () => {
    for (let i = 0; i < REDIS_BATCHES; i++) await send(batch());
  });
  await redis.del(key);
  redis.disconnect();
}

async function pgChild(viaPromise: boolean): Promise<void> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  const config = { text: `SELECT x, repeat('y', 300) AS payload FROM generate_series(1, ${BATCH}) AS x` };
  const query = async () => {
    const result = viaPromise ? await client.query(config) : await queryResult(client, config);
    if (result.rows.length !== BATCH) throw new Error("short result");
  };
  for (let i = 0; i < 200; i++) await query();
  await measured(PG_QUERIES, async () => {
    for (let i = 0; i < PG_QUERIES; i++) await query();
  });
  await client.end();
}

async function drainChild(): Promise<void> {
  const scratch = await createScratchDatabase(DATABASE_URL, "gc");
  const pool = createPool(scratch.url, { max: 4 });
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
  const keyPrefix = `bench:gc:${randomBytes(4).toString("hex")}:`;
  try {
    await migrateDatabase(scratch.url);
    const ids = Array.from({ length: ROWS }, (_, i) => `gc-${String(i).padStart(7, "0")}`);
    await insertPending(pool, Topics.sessionsRevoke.stream, ids, ids.map((_, i) => revocationFields(i)));
    const metrics = createMetrics(pool);
    const dispatcher = new OutboxDispatcher({
      pool,
      publisher: new StreamPublisher({ redis, signing: { mode: "stable", signer: new StreamSigner(randomBytes(32)) }, keyPrefix, maxLenFor: () => 100_000 }),
      redis,
      metrics,
      logger: pino({ level: "silent" }),
      owner: "bench-gc",
      batchSize: BATCH,
      pollMs: 50,
    });
    await redis.ping();
    const controller = new AbortController();
    let run: Promise<void> | undefined;
    await measured(ROWS, async () => {
      run = dispatcher.run(controller.signal);
      await untilDispatched(metrics, ROWS);
    });
    controller.abort();
    await run;
  } finally {
    await deletePrefix(redis, keyPrefix);
    redis.disconnect();
    await pool.end();
    await scratch.drop();
  }
}

interface RunFigures {
  scavenges: number;
  survivedMiBPerScavenge: number;
  promotedMiB: number;
  pauseMs: number;
  cpuMicrosPerItem: number;
}

function runChild(variant: string): RunFigures {
  // process.execArgv carries the TypeScript loader this bench runs under (tsx) to the child.
  const runtime = variant === "drain-runtime" ? [...SERVICE_NODE_FLAGS] : [];
  const out = spawnSync(process.execPath, [...process.execArgv, ...runtime, "--trace-gc-nvp", fileURLToPath(import.meta.url), "--child", variant], {
    encoding: "utf8",
    maxBuffer: 512 * 1024 * 1024,
  });
  if (out.status !== 0) throw new Error(`child ${variant} failed: ${out.stderr}`);
  let measuring = false;
  const figures = { scavenges: 0, survived: 0, promoted: 0, pause: 0 };
  let end: { cpuMicros: number; items: number } | undefined;
  for (const line of out.stdout.split("\n")) {
    if (line === START) measuring = true;
    else if (line.startsWith(END)) {
      measuring = false;
      end = JSON.parse(line.slice(END.length + 1)) as { cpuMicros: number; items: number };
    } else if (measuring && line.includes("gc=s ")) {
      const values = new Map(line.split(/\s+/).filter((kv) => kv.includes("=")).map((kv) => kv.split("=", 2) as [string, string]));
      figures.scavenges++;
      figures.survived += Number(values.get("new_space_survived"));
      figures.promoted += Number(values.get("promoted"));
      figures.pause += Number(values.get("pause"));
    }
  }
  if (end === undefined) throw new Error(`child ${variant} printed no result`);
  return {
    scavenges: figures.scavenges,
    survivedMiBPerScavenge: figures.scavenges === 0 ? 0 : figures.survived / figures.scavenges / 2 ** 20,
    promotedMiB: figures.promoted / 2 ** 20,
    pauseMs: figures.pause,
    cpuMicrosPerItem: end.cpuMicros / end.items,
  };
}

async function main(): Promise<void> {
  process.stderr.write(`bench:gc  rounds=${ROUNDS}  rows=${ROWS}\n`);
  const best = new Map<string, RunFigures>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of CASES) {
      for (const { variant } of [c.baseline, c.measured]) {
        const f = runChild(variant);
        process.stderr.write(
          `  round ${round} ${variant}: ${f.scavenges} scavenges, ${f.survivedMiBPerScavenge.toFixed(2)} MiB survived each, ` +
            `${f.promotedMiB.toFixed(1)} MiB promoted, ${f.pauseMs.toFixed(0)} ms paused, ${f.cpuMicrosPerItem.toFixed(1)} µs CPU per ${c.unit}\n`,
        );
        const previous = best.get(variant);
        if (previous === undefined || f.cpuMicrosPerItem < previous.cpuMicrosPerItem) best.set(variant, f);
      }
    }
  }
  const round2 = (n: number) => Math.round(n * 100) / 100;
  const metrics: BenchMetric[] = [];
  for (const c of CASES) {
    const base = best.get(c.baseline.variant) as RunFigures;
    const ours = best.get(c.measured.variant) as RunFigures;
    const vs = `${c.measured.label} vs ${c.baseline.label}`;
    metrics.push(
      ratioMetric(`${c.name}: MiB surviving each scavenge, ${vs}`, round2(ours.survivedMiBPerScavenge), round2(base.survivedMiBPerScavenge), "MiB"),
      ratioMetric(`${c.name}: ms paused in scavenges, ${vs}`, Math.round(ours.pauseMs), Math.round(base.pauseMs), "ms"),
      ratioMetric(`${c.name}: CPU µs per ${c.unit} (whole process), ${vs}`, round2(ours.cpuMicrosPerItem), round2(base.cpuMicrosPerItem), "µs"),
    );
  }
  metrics.push(plainMetric("scavenges in the reported drain with the service runtime settings", (best.get("drain-runtime") as RunFigures).scavenges, "scavenges"));
  reportBench("gc", metrics, { rounds: ROUNDS, rows: ROWS, batch: BATCH });
}

if (process.argv[2] === "--child") {
  const variant = process.argv[3];
  if (variant === "redis-pipeline" || variant === "redis-send-commands") await redisChild(variant === "redis-pipeline");
  else if (variant === "pg-promise" || variant === "pg-query-result") await pgChild(variant === "pg-promise");
  else if (variant === "drain-default" || variant === "drain-runtime") await drainChild();
  else throw new Error(`unknown variant ${variant}`);
} else {
  await main();
}
