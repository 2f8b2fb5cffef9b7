/**
 * The engine on a real 3-master Redis Cluster: publish, consume, reclaim and dead-letter, with the
 * stream and its dead letters in one slot (hash-tagged prefix) and in different slots.
 */
import { redisClusterAvailable, startRedisCluster } from "@caracal/testkit";
import type { TestRedisCluster } from "@caracal/testkit";
import type { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { TransientError } from "../errors.js";
import { StreamPublisher } from "../publisher.js";
import { streamKey } from "../registry.js";
import { duplicateClient } from "../redis.js";
import { countOutcomes, deadLetterRejections, parseTopicSchema, verifySignature } from "./steps/index.js";
import { dlqStream, group, readStream, revocation, stablePolicy, startConsumer, topic, waitFor } from "../test-support/harness.js";

const available = await redisClusterAvailable();

describe.skipIf(!available)("consumer on Redis Cluster", () => {
  let cluster: TestRedisCluster;
  let client: Cluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
    client = cluster.connect();
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  const slotOf = async (key: string) => Number(await client.call("CLUSTER", "KEYSLOT", key));

  for (const [label, keyPrefix] of [
    ["stream and dead letters in one slot", "{t1}:"],
    ["stream and dead letters in different slots", "t2:"],
  ] as const) {
    it(`publishes, consumes, reclaims and dead-letters (${label})`, async () => {
      const sameSlot = (await slotOf(streamKey(topic.stream, keyPrefix))) === (await slotOf(streamKey(dlqStream, keyPrefix)));
      expect(sameSlot).toBe(keyPrefix.startsWith("{"));
      const policy = stablePolicy();
      const publisher = new StreamPublisher({ redis: client, signing: policy, keyPrefix });
      const entries = Array.from({ length: 30 }, (_, i) => revocation(i));
      entries.push({ zone_id: "z", reason: "no anchor" });
      const outcomes = await publisher.publishBatch(entries.map((fields) => ({ stream: topic.stream, fields })));
      expect(outcomes.every((o) => o.ok)).toBe(true);

      // First consumer fails transiently on everything, then stops: 30 entries stay pending under its name.
      let failures = 0;
      const first = startConsumer({
        redis: client,
        signing: policy,
        keyPrefix,
        consumer: "first",
        handleMessage: async () => {
          failures++;
          throw new TransientError("not now");
        },
      });
      await waitFor(() => failures === 30, 10_000, "first deliveries");
      await first.stop();

      // Second consumer reclaims them with XAUTOCLAIM and handles each; the invalid one was dead-lettered.
      const handled = new Map<string, number>();
      const second = startConsumer<unknown>({
        redis: client,
        signing: policy,
        keyPrefix,
        consumer: "second",
        claimIdleMs: 200,
        claimIntervalMs: 100,
        handleMessage: async (m) => {
          handled.set(m.id, m.deliveries);
        },
      });
      await waitFor(() => handled.size === 30, 10_000, "reclaimed entries handled");
      const key = streamKey(topic.stream, keyPrefix);
      await waitFor(async () => ((await client.xpending(key, group)) as [number])[0] === 0, 5_000, "acks");
      await second.stop();
      expect([...handled.values()].every((d) => d === 2)).toBe(true);
      const letters = await readStream(client, streamKey(dlqStream, keyPrefix));
      expect(letters.map((l) => l.fields.reason)).toEqual(["schema_invalid"]);
      expect(policy.signer!.verify(dlqStream, letters[0]!.fields)).toBe("valid");
    });
  }

  it("a blocking read on the cluster does not delay the stop", async () => {
    const c = startConsumer<unknown>({ redis: client, signing: stablePolicy(), keyPrefix: "{s1}:", blockMs: 10_000, handleMessage: async () => undefined });
    await waitFor(() => c.consumer.state === "running", 5_000, "running");
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await c.stop();
    expect(Date.now() - t0).toBeLessThan(1_500);
    expect(c.consumer.state).toBe("stopped");
  });

  for (const [label, keyPrefix] of [
    ["stream and dead letters in one slot", "{f1}:"],
    ["stream and dead letters in different slots", "f2:"],
  ] as const) {
    it(`fan-out works on the cluster, dead-letters once and reports contact and lag (${label})`, async () => {
      const policy = stablePolicy();
      const seen = [new Set<string>(), new Set<string>()];
      const connections = seen.map(() => duplicateClient(client));
      const replicas = seen.map((set, i) =>
        startConsumer<unknown>({
          redis: connections[i]!,
          signing: policy,
          keyPrefix,
          consumer: `r${i}`,
          delivery: "fanout",
          startId: "0",
          statsIntervalMs: 50,
          handleMessage: async (m) => {
            set.add(m.id);
          },
        }),
      );
      const publisher = new StreamPublisher({ redis: client, signing: policy, keyPrefix });
      await publisher.publishBatch(Array.from({ length: 10 }, (_, i) => ({ stream: topic.stream, fields: revocation(i) })));
      await client.xadd(streamKey(topic.stream, keyPrefix), "*", ...Object.entries(revocation(99)).flat());
      await waitFor(() => seen.every((s) => s.size === 10), 5_000, "fan-out delivery");
      await waitFor(async () => (await client.xlen(streamKey(dlqStream, keyPrefix))) === 1, 5_000, "dead letter");
      await waitFor(() => replicas.every((r) => r.consumer.lag === 0), 5_000, "lag 0");
      for (const r of replicas) expect(Date.now() - r.consumer.lastContactAt!).toBeLessThan(1_000);
      await Promise.all(replicas.map((r) => r.stop()));
      await Promise.all(connections.map((c) => c.quit()));
      expect(await client.xlen(streamKey(dlqStream, keyPrefix))).toBe(1);
    });
  }

  it("composed steps on the cluster: the optional-signature step accepts unsigned and rejects a wrong _sig", async () => {
    const keyPrefix = "c3:";
    const policy = stablePolicy();
    const key = streamKey(topic.stream, keyPrefix);
    const unsigned = (await client.xadd(key, "*", ...Object.entries(revocation(1)).flat())) as string;
    const forged = (await client.xadd(key, "*", ...Object.entries({ ...revocation(2), _sig: "0".repeat(64) }).flat())) as string;
    const handled: string[] = [];
    const c = startConsumer<unknown>({
      redis: client,
      signing: policy,
      keyPrefix,
      steps: [countOutcomes(), deadLetterRejections(), verifySignature(policy, { missing: "accept" }), parseTopicSchema()],
      handleMessage: async (m) => {
        handled.push(m.id);
      },
    });
    await waitFor(async () => handled.length === 1 && ((await client.xpending(key, group)) as [number])[0] === 0, 5_000, "settled");
    await c.stop();
    expect(handled).toEqual([unsigned]);
    const letters = await readStream(client, streamKey(dlqStream, keyPrefix));
    expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([[forged, "signature_invalid"]]);
  });
});
