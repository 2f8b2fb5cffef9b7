/**
 * `pnpm bench:core`: throughput of the publisher and the consumer engine beside the raw Redis commands
 * they wrap, measured in the same run on a fresh key prefix, plus sign/verify rates, the publisher's XADD
 * encoding against ioredis's, and the XREADGROUP decode cost of ioredis 5 vs 6. Prints a table and
 * writes bench-results/core.json.
 *
 * Environment: REDIS_URL (default redis://127.0.0.1:6379), BENCH_EVENTS (default 100000),
 * BENCH_ROUNDS (default 2: best of n, alternating the measured code and its baseline).
 */
import { randomBytes } from "node:crypto";

import { Command, Redis } from "ioredis";
import { Redis as Redis6 } from "ioredis6";
import type { BenchMetric } from "@caracal/testkit/bench-report";
import { deletePrefix, rate, ratioMetric, reportBench, revocationFields } from "@caracal/testkit/bench-report";

import type { Fields } from "../src/codec.js";
import { fieldsToArgs } from "../src/codec.js";
import { StreamConsumer } from "../src/consumer/stream-consumer.js";
import { StreamPublisher } from "../src/publisher.js";
import { Topics, streamKey } from "../src/registry.js";
import { EncodedCommand, RespWriter, encodeXadd } from "../src/resp.js";
import { StreamSigner } from "../src/signing.js";
import type { SignaturePolicy } from "../src/signing.js";

type Metric = BenchMetric;

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const BATCH = 500;
const topic = Topics.sessionsRevoke;

/** A revocation as the outbox dispatcher publishes it (about 330 bytes of fields). */
function revocation(i: number): Fields {
  return { outbox_id: String(1_000_000 + i), ...revocationFields(i) };
}

async function timed(run: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await run();
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 20 });
  const prefix = `bench:${randomBytes(4).toString("hex")}:`;
  const signing: SignaturePolicy = { mode: "stable", signer: new StreamSigner(randomBytes(32)) };
  const signer = signing.signer as StreamSigner;
  const metrics: Metric[] = [];
  const events = Array.from({ length: EVENTS }, (_, i) => revocation(i));
  const log = (text: string) => process.stderr.write(`${text}\n`);
  log(`bench:core  events=${EVENTS}  rounds=${ROUNDS}  redis=${REDIS_URL.replace(/\/\/.*@/, "//***@")}  prefix=${prefix}`);

  try {
    // (a) publish: StreamPublisher (sign + XADD MAXLEN ~, pipelined per batch) vs raw pipelined XADD of pre-signed entries.
    const presigned = events.map((f) => fieldsToArgs(signer.signFields(topic.stream, f)));
    let pubBest = Infinity;
    let rawBest = Infinity;
    for (let round = 0; round < ROUNDS; round++) {
      const rawKey = `${prefix}raw-pub-${round}`;
      rawBest = Math.min(
        rawBest,
        await timed(async () => {
          for (let i = 0; i < EVENTS; i += BATCH) {
            const pipeline = redis.pipeline();
            for (let j = i; j < Math.min(EVENTS, i + BATCH); j++) pipeline.xadd(rawKey, "MAXLEN", "~", topic.maxLen, "*", ...(presigned[j] as string[]));
            await pipeline.exec();
          }
        }),
      );
      await redis.del(rawKey);
      const publisher = new StreamPublisher({ redis, signing, keyPrefix: `${prefix}pub-${round}:` });
      pubBest = Math.min(
        pubBest,
        await timed(async () => {
          for (let i = 0; i < EVENTS; i += BATCH) {
            const outcomes = await publisher.publishBatch(events.slice(i, i + BATCH).map((fields) => ({ stream: topic.stream, fields })));
            if (outcomes.some((o) => !o.ok)) throw new Error("publish failed");
          }
        }),
      );
      if (round < ROUNDS - 1) await redis.del(streamKey(topic.stream, `${prefix}pub-${round}:`));
    }
    metrics.push(ratioMetric("publish events/s (StreamPublisher, signed, batches of 500)", rate(EVENTS, pubBest), rate(EVENTS, rawBest), "events/s", ">= 0.85"));

    // The stream the publisher wrote in its last round holds EVENTS signed entries: consume it.
    const consumePrefix = `${prefix}pub-${ROUNDS - 1}:`;
    const key = streamKey(topic.stream, consumePrefix);

    // (b) consume: StreamConsumer (read + verify + parse + one XACK per batch) vs raw XREADGROUP COUNT 500 + XACK.
    let engineBest = Infinity;
    let rawConsumeBest = Infinity;
    for (let round = 0; round < ROUNDS; round++) {
      const rawGroup = `raw-${round}`;
      await redis.xgroup("CREATE", key, rawGroup, "0");
      rawConsumeBest = Math.min(
        rawConsumeBest,
        await timed(async () => {
          let read = 0;
          while (read < EVENTS) {
            const reply = (await redis.xreadgroup("GROUP", rawGroup, "bench", "COUNT", BATCH, "STREAMS", key, ">")) as Array<
              [string, Array<[string, string[]]>]
            > | null;
            const entries = reply?.[0]?.[1] ?? [];
            if (entries.length === 0) throw new Error("raw consumer ran dry");
            await redis.xack(key, rawGroup, ...entries.map((e) => e[0]));
            read += entries.length;
          }
        }),
      );
      engineBest = Math.min(engineBest, await consumeWithEngine(redis, signing, consumePrefix, topic.groups.sts.concat(`-${round}`)));
    }
    metrics.push(ratioMetric("consume events/s (StreamConsumer: read + verify + parse + ack)", rate(EVENTS, engineBest), rate(EVENTS, rawConsumeBest), "events/s", ">= 0.70"));
    // The engine's own cost: no key (nothing verified) and an identity parse, beside the same raw loop.
    let bareBest = Infinity;
    for (let round = 0; round < ROUNDS; round++) {
      bareBest = Math.min(
        bareBest,
        await consumeWithEngine(redis, { mode: "dev", signer: undefined }, consumePrefix, `bare-${round}`, (fields) => fields),
      );
    }
    metrics.push(ratioMetric("consume events/s, engine only (no _sig check, identity parse)", rate(EVENTS, bareBest), rate(EVENTS, rawConsumeBest), "events/s"));

    // (c) sign and verify rates (single core, no I/O), beside a bare HMAC-SHA256 of the same bytes.
    const signed = events.map((f) => signer.signFields(topic.stream, f));
    const signSeconds = await timed(async () => {
      for (const f of events) signer.signatures(topic.stream, f);
    });
    const verifySeconds = await timed(async () => {
      for (const f of signed) if (signer.verify(topic.stream, f) !== "valid") throw new Error("verify failed");
    });
    const { createHmac } = await import("node:crypto");
    const key32 = randomBytes(32);
    const canonical = events.map((f) => `${topic.stream}\n${Object.keys(f).sort().map((k) => `${k}=${f[k]}\n`).join("")}`);
    const hmacSeconds = await timed(async () => {
      for (const text of canonical) createHmac("sha256", key32).update(text).digest("hex");
    });
    metrics.push(ratioMetric("sign ops/s (_sig2 + _sig: two canonical texts + two HMAC-SHA256)", rate(EVENTS, signSeconds), rate(EVENTS, hmacSeconds), "ops/s"));
    metrics.push(ratioMetric("verify ops/s (canonical bytes + HMAC-SHA256 + constant-time compare)", rate(EVENTS, verifySeconds), rate(EVENTS, hmacSeconds), "ops/s"));

    // (d) XADD encoding alone (no I/O): the publisher's RESP writer against ioredis building the same
    // command from its argument list, each up to the bytes a pipeline of 100 commands hands the socket
    // (ioredis joins the commands' strings and writes the result as UTF-8).
    const encodeKey = streamKey(topic.stream, prefix);
    const pipelineBytes = (encodeCommand: (f: Fields) => string | Buffer) => {
      for (let i = 0; i < signed.length; i += 100) {
        let data = "";
        for (let j = i; j < Math.min(signed.length, i + 100); j++) data += encodeCommand(signed[j] as Fields) as string;
        Buffer.from(data, "utf8");
      }
    };
    let respSeconds = Infinity;
    let ioredisSeconds = Infinity;
    for (let round = 0; round < ROUNDS; round++) {
      const writer = new RespWriter();
      respSeconds = Math.min(
        respSeconds,
        await timed(async () => pipelineBytes((f) => new EncodedCommand("xadd", encodeKey, encodeXadd(writer, encodeKey, 100_000, f, undefined)).toWritable())),
      );
      ioredisSeconds = Math.min(
        ioredisSeconds,
        await timed(async () => pipelineBytes((f) => new Command("xadd", [encodeKey, "MAXLEN", "~", 100_000, "*", ...fieldsToArgs(f)]).toWritable(undefined as never))),
      );
    }
    metrics.push(ratioMetric("XADD encoding entries/s: RESP writer (publisher) vs ioredis Command from arguments", rate(EVENTS, respSeconds), rate(EVENTS, ioredisSeconds), "entries/s"));

    // (e) XREADGROUP decode of the same entries: ioredis 5.11 (used) vs ioredis 6 (RESP3 default, and RESP2).
    const clients: Array<[string, { xreadgroup: Redis["xreadgroup"]; xgroup: Redis["xgroup"]; quit(): Promise<unknown> }]> = [
      ["ioredis 5.11", new Redis(REDIS_URL)],
      ["ioredis 6 (default protocol: RESP3)", new Redis6(REDIS_URL) as unknown as Redis],
      ["ioredis 6 (protocol: 2)", new Redis6(REDIS_URL, { protocol: 2 }) as unknown as Redis],
    ];
    const decode = new Map<string, number>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, client] of clients) {
        const g = `decode-${round}-${name.replace(/\W+/g, "-")}`;
        await client.xgroup("CREATE", key, g, "0");
        const seconds = await timed(async () => {
          let read = 0;
          while (read < EVENTS) {
            const reply = (await client.xreadgroup("GROUP", g, "bench", "COUNT", BATCH, "STREAMS", key, ">")) as Array<
              [string, Array<[string, string[]]>]
            > | null;
            const entries = reply?.[0]?.[1] ?? [];
            if (entries.length === 0) throw new Error(`${name} ran dry`);
            if (typeof entries[0]?.[1]?.[0] !== "string") throw new Error(`${name}: unexpected reply shape`);
            read += entries.length;
          }
        });
        decode.set(name, Math.min(decode.get(name) ?? Infinity, seconds));
      }
    }
    await Promise.all(clients.map(([, c]) => c.quit()));
    const v5 = rate(EVENTS, decode.get("ioredis 5.11") as number);
    for (const [name] of clients.slice(1)) {
      metrics.push(ratioMetric(`XREADGROUP decode entries/s: ioredis 5.11 vs ${name}`, v5, rate(EVENTS, decode.get(name) as number), "entries/s"));
    }
  } finally {
    await deletePrefix(redis, prefix);
    await redis.quit();
  }

  reportBench("core", metrics, { events: EVENTS, rounds: ROUNDS });
}

async function consumeWithEngine(
  redis: Redis,
  signing: SignaturePolicy,
  keyPrefix: string,
  group: string,
  parse?: (fields: Fields) => unknown,
): Promise<number> {
  let acked = 0;
  let reached: () => void = () => undefined;
  const allAcked = new Promise<void>((r) => (reached = r));
  const consumer = new StreamConsumer<unknown>({
    redis,
    topic,
    ...(parse === undefined ? {} : { parse }),
    group,
    consumer: "bench",
    signing,
    keyPrefix,
    startId: "0",
    batchSize: BATCH,
    blockMs: 1_000,
    metrics: {
      acked: (n) => {
        acked += n;
        if (acked >= EVENTS) reached();
      },
      deadLettered: (reason) => {
        throw new Error(`unexpected dead letter: ${reason}`);
      },
    },
    handleBatch: async () => undefined,
  });
  const controller = new AbortController();
  const t0 = performance.now();
  const done = consumer.run(controller.signal);
  await allAcked;
  const seconds = (performance.now() - t0) / 1000;
  controller.abort();
  await done;
  return seconds;
}





main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
