/**
 * `pnpm bench:redis-batch`: what a batch of commands costs the garbage collector when it is sent as an
 * ioredis `Pipeline` (`redis.pipeline()`, the baseline) and when it is sent by streams-core's
 * `sendCommands` (corked socket, one write). Each variant runs in its own child process under
 * `--trace-gc-nvp`; the bench reads V8's own figures for every young-generation collection (scavenge)
 * during the measured loop: bytes that survived it, bytes promoted to the old generation, pause. Prints
 * a table and writes bench-results/redis-batch.json.
 *
 * The loop is the outbox dispatcher's publish step without the signing: batches of BENCH_BATCH (default
 * 32) encoded XADDs of a revocation, one batch in flight, BENCH_BATCHES (default 3000) batches per run,
 * BENCH_ROUNDS (default 3) runs of each variant, alternating; the best run of each is reported.
 *
 * Environment: REDIS_URL (default redis://127.0.0.1:6379).
 */
import { spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

import { Pipeline, Redis } from "ioredis";
import type { BenchMetric } from "@caracal/testkit/bench-report";
import { deletePrefix, plainMetric, ratioMetric, reportBench } from "@caracal/testkit/bench-report";

import { sendCommands } from "../redis.js";
import { EncodedCommand, RespWriter, encodeXadd } from "../resp.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const BATCH = Number(process.env.BENCH_BATCH ?? 32);
const BATCHES = Number(process.env.BENCH_BATCHES ?? 3000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const VARIANTS = ["pipeline", "sendCommands"] as const;
type Variant = (typeof VARIANTS)[number];

const START = "BENCH-LOOP-START";
const END = "BENCH-LOOP-END";

/** The measured loop, in a child process started with --trace-gc-nvp. Prints START, END and its CPU time. */
async function child(variant: Variant, prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
  await redis.ping();
  const writer = new RespWriter();
  const key = `${prefix}${variant}`;
  const batch = () =>
    Array.from({ length: BATCH }, (_, i) => {
      const fields = {
        outbox_id: `id-${i}`,
        zone_id: "5f0c6a52-8c1e-4c53-9d0e-2f7a4b1c9e10",
        reason: "session_revoked_by_admin",
        session_id: randomUUID(),
        grant_id: randomUUID(),
        occurred_at: new Date(1_790_000_000_000 + i).toISOString(),
      };
      return new EncodedCommand("xadd", key, encodeXadd(writer, key, 10_000, fields, "_sig", { field: "_sig", value: "0".repeat(64) }));
    });
  // warm-up, unmeasured
  for (let i = 0; i < 200; i++) await sendCommands(redis, batch());
  process.stdout.write(`${START}\n`);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < BATCHES; i++) {
    const commands = batch();
    if (variant === "pipeline") {
      // what `redis.pipeline()` returns, typed as the class: its `sendCommand` takes a prepared command
      const pipeline = new Pipeline(redis);
      for (const command of commands) pipeline.sendCommand(command);
      const results = await pipeline.exec();
      if (results === null || results.some(([error]) => error)) throw new Error("an XADD failed");
    } else {
      const results = await sendCommands(redis, commands);
      if (results.some(([error]) => error)) throw new Error("an XADD failed");
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(`${END} ${JSON.stringify({ cpuMicros: cpu.user + cpu.system, seconds })}\n`);
  redis.disconnect();
}

interface RunFigures {
  scavenges: number;
  survivedMiBPerScavenge: number;
  promotedMiB: number;
  pauseMs: number;
  cpuMicrosPerCommand: number;
  commandsPerSecond: number;
}

function runChild(variant: Variant, prefix: string): RunFigures {
  const script = fileURLToPath(import.meta.url);
  const out = spawnSync(process.execPath, ["--trace-gc-nvp", script, "--child", variant, prefix], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
  if (out.status !== 0) throw new Error(`child ${variant} failed: ${out.stderr}`);
  let measuring = false;
  let scavenges = 0;
  let survived = 0;
  let promoted = 0;
  let pause = 0;
  let end: { cpuMicros: number; seconds: number } | undefined;
  for (const line of out.stdout.split("\n")) {
    if (line === START) measuring = true;
    else if (line.startsWith(END)) {
      measuring = false;
      end = JSON.parse(line.slice(END.length + 1)) as { cpuMicros: number; seconds: number };
    } else if (measuring && line.includes("gc=s ")) {
      const values = new Map(line.split(/\s+/).filter((kv) => kv.includes("=")).map((kv) => kv.split("=", 2) as [string, string]));
      scavenges++;
      survived += Number(values.get("new_space_survived"));
      promoted += Number(values.get("promoted"));
      pause += Number(values.get("pause"));
    }
  }
  if (end === undefined) throw new Error(`child ${variant} printed no result`);
  const commands = BATCH * BATCHES;
  return {
    scavenges,
    survivedMiBPerScavenge: scavenges === 0 ? 0 : survived / scavenges / 2 ** 20,
    promotedMiB: promoted / 2 ** 20,
    pauseMs: pause,
    cpuMicrosPerCommand: end.cpuMicros / commands,
    commandsPerSecond: commands / end.seconds,
  };
}

async function main(): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
  const prefix = `bench:${randomBytes(4).toString("hex")}:`;
  const best = new Map<Variant, RunFigures>();
  process.stderr.write(`bench:redis-batch  batch=${BATCH}  batches=${BATCHES}  rounds=${ROUNDS}  prefix=${prefix}\n`);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const variant of VARIANTS) {
        const figures = runChild(variant, prefix);
        process.stderr.write(
          `  round ${round} ${variant}: ${figures.scavenges} scavenges, ${figures.survivedMiBPerScavenge.toFixed(2)} MiB survived each, ` +
            `${figures.promotedMiB.toFixed(1)} MiB promoted, ${figures.pauseMs.toFixed(0)} ms paused, ${figures.cpuMicrosPerCommand.toFixed(1)} µs CPU per command\n`,
        );
        const previous = best.get(variant);
        if (previous === undefined || figures.cpuMicrosPerCommand < previous.cpuMicrosPerCommand) best.set(variant, figures);
      }
    }
  } finally {
    await deletePrefix(redis, prefix);
    redis.disconnect();
  }
  const ours = best.get("sendCommands") as RunFigures;
  const base = best.get("pipeline") as RunFigures;
  const round2 = (n: number) => Math.round(n * 100) / 100;
  const metrics: BenchMetric[] = [
    ratioMetric(`MiB surviving each scavenge, batches of ${BATCH} XADDs: sendCommands vs redis.pipeline()`, round2(ours.survivedMiBPerScavenge), round2(base.survivedMiBPerScavenge), "MiB"),
    ratioMetric(`MiB promoted to the old generation in ${BATCHES} batches: sendCommands vs redis.pipeline()`, round2(ours.promotedMiB), round2(base.promotedMiB), "MiB"),
    ratioMetric(`ms paused in scavenges in ${BATCHES} batches: sendCommands vs redis.pipeline()`, Math.round(ours.pauseMs), Math.round(base.pauseMs), "ms"),
    ratioMetric("CPU µs per command (client process): sendCommands vs redis.pipeline()", round2(ours.cpuMicrosPerCommand), round2(base.cpuMicrosPerCommand), "µs"),
    plainMetric("commands/s, sendCommands (one batch in flight)", Math.round(ours.commandsPerSecond), "commands/s"),
    plainMetric("commands/s, redis.pipeline() (one batch in flight)", Math.round(base.commandsPerSecond), "commands/s"),
  ];
  reportBench("redis-batch", metrics, { batch: BATCH, batches: BATCHES, rounds: ROUNDS });
}

if (process.argv[2] === "--child") {
  await child(process.argv[3] as Variant, process.argv[4] as string);
} else {
  await main();
}
