/**
 * `pnpm bench:outbox`: the outbox dispatcher against raw pipelined XADD of the same messages, in the same
 * run, on a fresh database and key prefix, with each stage of a batch also timed alone (the database
 * round trip without Redis, the publish without PostgreSQL; the database stage also with claims four times
 * larger, which splits PostgreSQL's CPU into what each claim costs whatever its size and what each row
 * costs); and commit -> XADD latency at a steady
 * 1,000 rows/s with NOTIFY beside the upstream design (poll every 250 ms, no NOTIFY). Prints a table and
 * writes bench-results/outbox.json.
 *
 * Environment: DATABASE_URL (admin URL; a scratch database is created and dropped), REDIS_URL,
 * BENCH_ROWS (default 20000), BENCH_ROUNDS (default 3, best of; the first round runs cold code), BENCH_BATCH (default 32, the seed's
 * CARACAL_OUTBOX_BATCH), BENCH_LATENCY_SECONDS (default 5 per variant), BENCH_RATE (default 1000 rows/s).
 */
// first, as in the service's main module: the V8 settings of every service process
import { randomBytes } from "node:crypto";

import { createPool, migrateDatabase, queryResult } from "@caracal/db";
import { OUTBOX_CHANNEL, enqueue, outboxEntry } from "@caracal/outbox";
import type { Fields } from "@caracal/streams-core";
import type { PublishEntry } from "@caracal/streams-core";
import { StreamPublisher, StreamSigner, Topics, fieldsToArgs, streamKey } from "@caracal/streams-core";
import type { BenchMetric, CpuSpent } from "@caracal/testkit/bench-report";
import { coreBoundMetrics, cpuMeter, createScratchDatabase, deletePrefix, plainMetric, postgresServerPid, ratioMetric, redisServerPid, reportBench, revocationFields } from "@caracal/testkit/bench-report";
import { Redis } from "ioredis";
import { pino } from "pino";

import { OutboxDispatcher } from "../src/dispatcher.js";
import { NotifyListener } from "../src/listener.js";
import { createMetrics } from "../src/metrics.js";
import type { ClaimedRow, ExchangeRow, RowOutcome } from "../src/sql.js";
import { EXCHANGE_SQL, EXCHANGE_TYPES, exchangeParams } from "../src/sql.js";
import { insertPending, untilDispatched } from "./support.js";

type Metric = BenchMetric;

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const ROWS = Number(process.env.BENCH_ROWS ?? 20_000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const BATCH = Number(process.env.BENCH_BATCH ?? 32);
/** Claim size of the second database-stage run (see "PostgreSQL CPU µs per claim"). */
const LARGE_BATCH = BATCH * 4;
const LATENCY_SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 5);
const RATE = Number(process.env.BENCH_RATE ?? 1000);
const MAXLEN = 100_000;
const topic = Topics.sessionsRevoke;
const logger = pino({ level: "silent" });
const log = (text: string) => process.stderr.write(`${text}\n`);



async function main(): Promise<void> {
  const scratch = await createScratchDatabase(DATABASE_URL, "outbox");
  const url = scratch.url;
  await migrateDatabase(url);
  const pool = createPool(url, { max: 24 });
  pool.on("error", () => undefined);
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
  const prefix = `bench:${randomBytes(4).toString("hex")}:`;
  const signer = new StreamSigner(randomBytes(32));
  const signing = { mode: "stable" as const, signer };
  const metrics: Metric[] = [];
  log(`bench:outbox  rows=${ROWS}  rounds=${ROUNDS}  batch=${BATCH}  latency=${LATENCY_SECONDS}s at ${RATE}/s  db=${scratch.name}  prefix=${prefix}`);

  const newDispatcher = (redisClient: Redis, keyPrefix: string, pollMs: number, metrics = createMetrics(pool)) => {
    const publisher = new StreamPublisher({ redis: redisClient, signing, keyPrefix, maxLenFor: () => MAXLEN });
    return new OutboxDispatcher({
      pool,
      publisher,
      redis: redisClient,
      metrics,
      logger,
      owner: `bench-${randomBytes(3).toString("hex")}`,
      batchSize: BATCH,
      pollMs,
    });
  };

  try {
    // (a) Throughput: a backlog of ROWS pending rows drained by one dispatcher, against raw pipelined XADD
    // (batches of BATCH, one in flight, as the dispatcher) of the same pre-signed messages.
    let dispatchBest = Infinity;
    let rawBest = Infinity;
    let databaseBest = Infinity;
    /** PostgreSQL CPU seconds per row in the database stage alone, at BATCH and LARGE_BATCH rows per claim. */
    const perClaim: Array<{ small: number; large: number }> = [];
    let publishBest = Infinity;
    let dispatchCpu: CpuSpent | undefined;
    // Where the dispatcher's time goes: CPU of this process, of the PostgreSQL server and of Redis (/proc).
    const cpu = cpuMeter({
      postgres: postgresServerPid((await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid),
      redis: await redisServerPid(redis),
    });
    for (let round = 0; round < ROUNDS; round++) {
      const events = Array.from({ length: ROWS }, (_, i) => revocationFields(i));
      const ids = events.map((_, i) => `r${round}-${String(i).padStart(7, "0")}`);
      const presigned = events.map((f, i) => fieldsToArgs(signer.signFields(topic.stream, { ...f, outbox_id: ids[i] as string })));
      const rawKey = streamKey(topic.stream, `${prefix}raw${round}:`);
      const t0 = performance.now();
      for (let i = 0; i < presigned.length; i += BATCH) {
        const pipeline = redis.pipeline();
        for (const args of presigned.slice(i, i + BATCH)) pipeline.xadd(rawKey, "MAXLEN", "~", MAXLEN, "*", ...args);
        await pipeline.exec();
      }
      rawBest = Math.min(rawBest, (performance.now() - t0) / 1000);

      await insertPending(pool, topic.stream, ids, events);
      const keyPrefix = `${prefix}d${round}:`;
      const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
      await client.ping();
      const dispatcherMetrics = createMetrics(pool);
      const dispatcher = newDispatcher(client, keyPrefix, 50, dispatcherMetrics);
      const controller = new AbortController();
      const cpu0 = cpu.now();
      const t1 = performance.now();
      const run = dispatcher.run(controller.signal);
      // Done when every row is on the stream; checked with XLEN below.
      await untilDispatched(dispatcherMetrics, ROWS);
      const seconds = (performance.now() - t1) / 1000;
      const spent = cpu.since(cpu0);
      controller.abort();
      await run;
      client.disconnect();
      const onStream = await redis.xlen(streamKey(topic.stream, keyPrefix));
      if (onStream !== ROWS) throw new Error(`round ${round}: ${onStream} entries on the stream, expected ${ROWS}`);
      const { rows } = await pool.query("SELECT count(*)::int AS n FROM event_outbox WHERE dispatched_at IS NULL");
      if (rows[0].n !== 0) throw new Error(`round ${round}: ${rows[0].n} rows left undispatched`);
      if (seconds < dispatchBest) dispatchCpu = spent;
      dispatchBest = Math.min(dispatchBest, seconds);
      await resetTable();

      // Each stage of a batch alone, on the same rows: where the dispatcher's time goes.
      const database = await databaseStageAlone(ids, events, BATCH, cpu);
      databaseBest = Math.min(databaseBest, database.seconds);
      // The same stage with claims four times larger: PostgreSQL's CPU per row at both sizes separates
      // what each claim costs it whatever its size from what each row costs.
      const databaseLarge = await databaseStageAlone(ids, events, LARGE_BATCH, cpu);
      if (database.postgresCpu !== undefined && databaseLarge.postgresCpu !== undefined) {
        perClaim.push({ small: database.postgresCpu / ROWS, large: databaseLarge.postgresCpu / ROWS });
      }
      const publish = await publishStageAlone(ids, events, `${prefix}p${round}:`);
      publishBest = Math.min(publishBest, publish);
      log(
        `  round ${round}: dispatcher ${Math.round(ROWS / seconds)} rows/s, raw XADD ${Math.round(ROWS / rawBest)} rows/s; ` +
          `stages alone: database ${Math.round(ROWS / database.seconds)} rows/s, publish ${Math.round(ROWS / publish)} rows/s`,
      );
    }
    metrics.push(
      ratioMetric(
        `dispatch rows/s (claim + sign + pipelined XADD + mark, batch ${BATCH}) vs raw pipelined XADD of the same signed messages`,
        Math.round(ROWS / dispatchBest),
        Math.round(ROWS / rawBest),
        "rows/s",
        ">= 0.50",
      ),
      ratioMetric(
        `database stage alone (one outbox_exchange per batch: write ${BATCH} outcomes + claim ${BATCH}; no Redis) vs raw pipelined XADD`,
        Math.round(ROWS / databaseBest),
        Math.round(ROWS / rawBest),
        "rows/s",
      ),
      ratioMetric(
        `publish stage alone (validate + sign + pipelined XADD of the same rows, batch ${BATCH}; no PostgreSQL) vs raw pipelined XADD`,
        Math.round(ROWS / publishBest),
        Math.round(ROWS / rawBest),
        "rows/s",
      ),
    );
    // PostgreSQL CPU per row = per row + per claim / claim size; two sizes give both (median of the rounds).
    if (perClaim.length > 0) {
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
      const small = median(perClaim.map((c) => c.small));
      const large = median(perClaim.map((c) => c.large));
      const claimSeconds = (small - large) / (1 / BATCH - 1 / LARGE_BATCH);
      metrics.push(
        plainMetric(`database stage alone: PostgreSQL CPU µs per row, claims of ${BATCH}`, Math.round(small * 1e7) / 10, "µs"),
        plainMetric(`database stage alone: PostgreSQL CPU µs per row, claims of ${LARGE_BATCH}`, Math.round(large * 1e7) / 10, "µs"),
        plainMetric(`database stage alone: PostgreSQL CPU µs per claim whatever its size (from the two above)`, Math.round(claimSeconds * 1e6), "µs"),
        plainMetric(`database stage alone: PostgreSQL CPU µs per row beyond it`, Math.round((small - claimSeconds / BATCH) * 1e7) / 10, "µs"),
      );
    }
    // CPU per row of the fastest dispatcher round; the three share the machine's cores.
    const perRow = (seconds: number | undefined) => (seconds === undefined ? undefined : Math.round((seconds / ROWS) * 1e7) / 10);
    for (const [who, seconds] of [
      ["dispatcher process", dispatchCpu?.node],
      ["PostgreSQL server", dispatchCpu?.postgres],
      ["Redis server", dispatchCpu?.redis],
      ["wall", dispatchBest],
    ] as const) {
      const value = perRow(seconds);
      if (value !== undefined) metrics.push(plainMetric(who === "wall" ? "dispatch wall time µs per row" : `dispatch CPU µs per row, ${who}`, value, "µs"));
    }
    if (dispatchCpu !== undefined) metrics.push(...(coreBoundMetrics("dispatch", dispatchCpu, ROWS, dispatchBest, rawBest) ?? []));

    // (b) Latency at a steady RATE rows/s: one single-row transaction per row, commit -> XADD measured from
    // the moment COMMIT returned to the entry id's timestamp (Redis clock, same host, 1 ms resolution).
    const notify = await latencyRun("notify", true);
    const polled = await latencyRun("upstream-poll", false);
    const pct = (values: number[], p: number) => values[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)] as number;
    for (const p of [50, 99]) {
      const value = pct(notify.latencies, p);
      const base = pct(polled.latencies, p);
      metrics.push({
        name: `commit -> XADD p${p} ms at ${RATE} rows/s (NOTIFY + 250 ms poll) vs upstream-style poller (every 250 ms, drain while batches are full)`,
        value,
        unit: "ms",
        baseline: base,
        ratio: base === 0 ? null : Math.round((value / base) * 1000) / 1000,
        ...(p === 99 ? { goal: "<= 25 ms" } : {}),
      });
    }
    metrics.push({ name: `commit -> XADD max ms at ${RATE} rows/s (NOTIFY)`, value: notify.latencies[notify.latencies.length - 1] ?? 0, unit: "ms", baseline: null, ratio: null });
    metrics.push({ name: "achieved producer rate (NOTIFY run)", value: notify.rate, unit: "rows/s", baseline: RATE, ratio: Math.round((notify.rate / RATE) * 1000) / 1000 });
  } finally {
    await deletePrefix(redis, prefix);
    redis.disconnect();
    await pool.end();
    await scratch.drop();
  }

  reportBench("outbox", metrics, { rows: ROWS, rounds: ROUNDS, batch: BATCH, latencySeconds: LATENCY_SECONDS, rate: RATE });

  /**
   * Every round and run starts from an empty table, as the first round does. A DELETE would leave the
   * previous round's dead rows and their entries at the head of the pending index for the next round to
   * step over until a vacuum, and this machine's PostgreSQL may run with autovacuum off (a deployment's
   * autovacuum removes them as it goes).
   */
  async function resetTable(): Promise<void> {
    await pool.query("TRUNCATE event_outbox");
  }

  /**
   * Seconds to drain `ids` (inserted here) with nothing but the dispatcher's PostgreSQL round trips: each
   * `outbox_exchange` marks the previous batch dispatched and claims the next, one call in flight, as the
   * dispatcher does, with no Redis and no signing.
   */
  async function databaseStageAlone(
    ids: readonly string[],
    events: readonly Fields[],
    batch: number,
    meter: ReturnType<typeof cpuMeter>,
  ): Promise<{ seconds: number; postgresCpu: number | undefined }> {
    await insertPending(pool, topic.stream, ids, events);
    const owner = `bench-db-${randomBytes(3).toString("hex")}`;
    let marks: RowOutcome[] = [];
    let done = 0;
    // As the dispatcher: one held connection, node-postgres's callback form (`queryResult`).
    const client = await pool.connect();
    const cpu0 = meter.now();
    const t0 = performance.now();
    try {
      for (;;) {
        const { rows } = await queryResult<ExchangeRow>(client, { name: "outbox_exchange", text: EXCHANGE_SQL, values: exchangeParams(marks, batch, 30_000, owner), types: EXCHANGE_TYPES });
        const claimed = rows.filter((r): r is ExchangeRow & ClaimedRow => r.id !== null);
        if (claimed.length === 0 && marks.length === 0) break;
        done += claimed.length;
        marks = claimed.map((r, i) => ({ kind: "dispatched", id: r.id, entryId: `1-${done + i}` }));
      }
    } finally {
      client.release();
    }
    const seconds = (performance.now() - t0) / 1000;
    const postgresCpu = meter.since(cpu0).postgres;
    if (done !== ids.length) throw new Error(`database stage claimed ${done} of ${ids.length} rows`);
    await resetTable();
    return { seconds, postgresCpu };
  }


  /**
   * Seconds to publish the same rows with nothing but the dispatcher's Redis side: per batch, each row's
   * payload (JSON text, as the claim returns it) is parsed, flattened and validated (`outboxEntry`), then signed and sent
   * in one pipeline by the dispatcher's publisher; one batch in flight.
   */
  async function publishStageAlone(ids: readonly string[], events: readonly Fields[], keyPrefix: string): Promise<number> {
    const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
    await client.ping();
    const publisher = new StreamPublisher({ redis: client, signing, keyPrefix, maxLenFor: () => MAXLEN });
    // As the claim returns them: JSON text, parsed when published.
    const payloads = events.map((e) => JSON.stringify(e));
    const t0 = performance.now();
    for (let i = 0; i < ids.length; i += BATCH) {
      const entries: PublishEntry[] = [];
      for (let j = i; j < Math.min(i + BATCH, ids.length); j++) {
        const check = outboxEntry(topic.stream, JSON.parse(payloads[j] as string) as unknown, ids[j] as string);
        if (!check.ok) throw new Error(check.message);
        entries.push({ stream: check.topic.stream, fields: check.fields });
      }
      const results = await publisher.publishBatch(entries);
      if (!results.every((r) => r.ok)) throw new Error("publish stage: an XADD failed");
    }
    const seconds = (performance.now() - t0) / 1000;
    client.disconnect();
    return seconds;
  }

  /**
   * The upstream design, as the seed describes it: every CARACAL_OUTBOX_POLL_MS (250) fetch up to BATCH
   * due rows (FOR UPDATE SKIP LOCKED, oldest first), XADD them, mark them; here it keeps fetching while
   * batches come back full, which is kinder to it than one batch per poll (128 rows/s at most).
   */
  async function upstreamPoller(client: Redis, keyPrefix: string, signal: AbortSignal): Promise<void> {
    const publisher = new StreamPublisher({ redis: client, signing, keyPrefix, maxLenFor: () => MAXLEN });
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, 250));
      for (;;) {
        const c = await pool.connect();
        let n = 0;
        try {
          await c.query("BEGIN");
          const { rows } = await c.query<{ id: string; stream_name: string; payload_json: Fields }>(
            `SELECT id, stream_name, payload_json FROM event_outbox WHERE dispatched_at IS NULL AND available_at <= now()
             ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED`,
            [BATCH],
          );
          n = rows.length;
          if (n > 0) {
            await publisher.publishBatch(rows.map((r) => ({ stream: r.stream_name, fields: { ...r.payload_json, outbox_id: r.id } })));
            await c.query("UPDATE event_outbox SET dispatched_at = now() WHERE id = ANY($1)", [rows.map((r) => r.id)]);
          }
          await c.query("COMMIT");
        } finally {
          c.release();
        }
        if (n < BATCH) break;
      }
    }
  }

  async function latencyRun(label: string, withNotify: boolean): Promise<{ latencies: number[]; rate: number }> {
    const keyPrefix = `${prefix}lat-${label}:`;
    const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
    await client.ping();
    const controller = new AbortController();
    let run: Promise<void>;
    let listener: NotifyListener | undefined;
    if (withNotify) {
      const dispatcher = newDispatcher(client, keyPrefix, 250);
      listener = new NotifyListener({ connectionString: url, channel: OUTBOX_CHANNEL, onWake: () => dispatcher.wake(), logger });
      listener.start();
      run = dispatcher.run(controller.signal);
    } else {
      run = upstreamPoller(client, keyPrefix, controller.signal);
    }
    await new Promise((r) => setTimeout(r, 300));
    const total = Math.round(RATE * LATENCY_SECONDS);
    const committedAt = new Map<string, number>();
    const t0 = performance.now() + 20;
    let next = 0;
    // Enough producers that a slow commit never holds the schedule back.
    const workers = Array.from({ length: 16 }, async () => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const wait = t0 + (i * 1000) / RATE - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const c = await pool.connect();
        try {
          await c.query("BEGIN");
          const id = await enqueue(c, "sessionsRevoke", revocationFields(i) as { zone_id: string; reason: string });
          await c.query("COMMIT");
          committedAt.set(id, Date.now());
        } finally {
          c.release();
        }
      }
    });
    await Promise.all(workers);
    const producedSeconds = (performance.now() - t0) / 1000;
    const key = streamKey(topic.stream, keyPrefix);
    while ((await redis.xlen(key)) < total) await new Promise((r) => setTimeout(r, 20));
    controller.abort();
    await run;
    await listener?.close();
    client.disconnect();
    const entries = (await redis.xrange(key, "-", "+")) as [string, string[]][];
    const latencies: number[] = [];
    for (const [entryId, list] of entries) {
      const k = list.indexOf("outbox_id");
      const at = committedAt.get(list[k + 1] as string);
      if (at !== undefined) latencies.push(Math.max(0, Number(entryId.split("-")[0]) - at));
    }
    latencies.sort((a, b) => a - b);
    await resetTable();
    log(`  latency ${label}: ${latencies.length} rows, p50 ${latencies[Math.floor(latencies.length / 2)]} ms, producers at ${Math.round(total / producedSeconds)} rows/s`);
    return { latencies, rate: Math.round(total / producedSeconds) };
  }
}





main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
