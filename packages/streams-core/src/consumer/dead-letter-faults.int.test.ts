/**
 * The dead-letter stream under faults (issue 15): deleted, or replaced by a key of the wrong type. A
 * consumer must not crash, must not ack an entry whose dead letter was not written, and must recover by
 * itself once the key is usable again. And a flood of dead letters stays bounded by MAXLEN.
 */
import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { DeadLetterWriter } from "../dead-letter.js";
import { deadLetterKey, dlqStream, pendingEntries, rawAdd, revocation, sleep, stablePolicy, startConsumer, topic, waitFor } from "../test-support/harness.js";

const DELIVERIES = ["group", "fanout"] as const;

describe.skipIf(!hasRedis())("dead-letter stream faults", () => {
  let r: TestRedis;
  beforeEach(async () => {
    r = await createTestRedis("dlqfault");
  });
  afterEach(async () => {
    await r.close();
  });

  for (const delivery of DELIVERIES) {
    it(`a dead-letter key of the wrong type: no crash, no ack, recovery once it is fixed (${delivery})`, async () => {
      const policy = stablePolicy();
      await r.client.set(deadLetterKey(r.keyPrefix), "not a stream");
      const unsigned = await rawAdd(r.client, r.keyPrefix, revocation(1));
      const handled: string[] = [];
      let failedWrites = 0;
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        delivery,
        retryBackoffMs: 20,
        claimIdleMs: 200,
        claimIntervalMs: 100,
        metrics: { deadLetterWriteFailed: (n) => (failedWrites += n) },
        handleMessage: async (m) => void handled.push(m.id),
      });
      await waitFor(() => failedWrites >= 1, 10_000, "a failed dead-letter write, counted");
      await sleep(300);
      expect(c.consumer.state).toBe("running");
      if (delivery === "group") {
        // not acked: no durable record of the rejection exists yet
        expect((await pendingEntries(r.client, r.keyPrefix)).map((p) => p[0])).toEqual([unsigned]);
      }
      // fixed: the letter is written and (group) the entry acked, with no restart
      await r.client.del(deadLetterKey(r.keyPrefix));
      await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 1, 10_000, "dead letter written after the fix");
      if (delivery === "group") await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 10_000, "acked");
      // a valid entry after it is handled: the consumer kept going
      const valid = (await (await import("../test-support/harness.js")).publishRevocations(r.client, policy, r.keyPrefix, [revocation(2)]))[0]!;
      await waitFor(() => handled.includes(valid), 10_000, "valid entry handled");
      expect(handled).not.toContain(unsigned);
      await c.stop();
    });

    it(`a deleted dead-letter stream is created again by the next letter (${delivery})`, async () => {
      const policy = stablePolicy();
      const c = startConsumer<unknown>({ redis: r.client, signing: policy, keyPrefix: r.keyPrefix, delivery, handleMessage: async () => undefined });
      await rawAdd(r.client, r.keyPrefix, revocation(1));
      await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 1, 10_000, "first letter");
      await r.client.del(deadLetterKey(r.keyPrefix));
      await rawAdd(r.client, r.keyPrefix, revocation(2));
      await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 1, 10_000, "letter in the new stream");
      expect(c.consumer.state).toBe("running");
      await c.stop();
    });
  }

  it("a flood of dead letters is trimmed to MAXLEN ~, and the letters dropped unread are counted", async () => {
    const writer = new DeadLetterWriter({ redis: r.client, signing: stablePolicy(), keyPrefix: r.keyPrefix, maxLen: 100 });
    const letter = (i: number) => ({ reason: "schema_invalid" as const, srcStream: topic.stream, srcId: `1-${i}`, group: "g", consumer: "c", deliveries: 1, error: "", fields: { n: String(i) } });
    for (let batch = 0; batch < 10; batch++) {
      const errors = await writer.write(dlqStream, Array.from({ length: 100 }, (_, i) => letter(batch * 100 + i)));
      expect(errors.every((e) => e === undefined)).toBe(true);
    }
    const length = await r.client.xlen(deadLetterKey(r.keyPrefix));
    // MAXLEN ~ trims whole radix-tree nodes: at least the bound, far below the 1,000 written
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThan(400);
    const sample = await writer.sample(dlqStream);
    expect(sample.length).toBe(length);
    expect(sample.added).toBe(1000);
    expect(sample.droppedUnread).toBe(1000 - length);
    expect(sample.oldestAgeSeconds).toBeGreaterThanOrEqual(0);
  });
});
