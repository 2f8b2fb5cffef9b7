/**
 * Consumer conformance suite (WIRE §4) against real Redis. Each test has its own key prefix and asserts
 * one guarantee, so that it fails when the guarantee breaks.
 */
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { Fields } from "../codec.js";
import type { DeadLetterReason } from "../errors.js";
import { CaracalError, RejectedMessageError, TransientError } from "../errors.js";
import { streamKey } from "../registry.js";
import { StreamSigner } from "../signing.js";
import {
  RFC3339,
  deadLetterKey,
  devPolicy,
  dlqStream,
  group,
  newKeyHex,
  pendingEntries,
  publishRevocations,
  rawAdd,
  readStream,
  revocation,
  sleep,
  stablePolicy,
  startConsumer,
  topic,
  waitFor,
} from "../test-support/harness.js";
import type { StreamMessage } from "./types.js";

/** Assertions that do not depend on a group's PEL run on both delivery modes. */
const DELIVERIES = ["group", "fanout"] as const;

class PermanentDomainError extends CaracalError {
  readonly code = "DOMAIN_PERMANENT";
  readonly permanent = true;
}

describe.skipIf(!hasRedis())("consumer conformance", () => {
  let r: TestRedis;
  beforeEach(async () => {
    r = await createTestRedis("conf");
  });
  afterEach(async () => {
    await r.close();
  });

  const key = () => streamKey(topic.stream, r.keyPrefix);
  /** Group: nothing pending. Fan-out (no acks): the expected dead letters are written. */
  const settledAll = async (delivery: "group" | "fanout", letters: number) =>
    delivery === "group" ? (await pendingEntries(r.client, r.keyPrefix)).length === 0 : (await r.client.xlen(deadLetterKey(r.keyPrefix))) >= letters;

  it("acknowledges only after success: a throwing handler leaves the entry pending", async () => {
    const policy = stablePolicy();
    const [failing] = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1)]);
    let calls = 0;
    const c = startConsumer({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      handleMessage: async () => {
        calls++;
        throw new TransientError("database down");
      },
    });
    await waitFor(() => calls === 1, 5_000, "handler call");
    await sleep(200);
    await c.stop();
    const pending = await pendingEntries(r.client, r.keyPrefix);
    expect(pending.map((p) => [p[0], p[1]])).toEqual([[failing, "c1"]]);
    expect(await r.client.exists(deadLetterKey(r.keyPrefix))).toBe(0);

    // The same entry, handled successfully by a restarted consumer, is acknowledged.
    const handled: string[] = [];
    const c2 = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      handleMessage: async (m) => {
        handled.push(m.id);
      },
    });
    await waitFor(() => handled.length === 1, 5_000, "second handler call");
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "ack");
    await c2.stop();
    expect(handled).toEqual([failing]);
  });

  it("loses nothing when a consumer is killed mid-batch: another reclaims and handles every entry", async () => {
    const keyHex = newKeyHex();
    const policy = stablePolicy(keyHex);
    const ids = await publishRevocations(
      r.client,
      policy,
      r.keyPrefix,
      Array.from({ length: 20 }, (_, i) => revocation(i)),
    );
    const script = fileURLToPath(new URL("../test-support/crash-consumer.ts", import.meta.url));
    const tsx = createRequire(import.meta.url).resolve("tsx");
    const child = spawn(process.execPath, ["--import", tsx, script, r.url, r.keyPrefix, keyHex, "doomed"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let received = 0;
    child.stdout.on("data", (chunk: Buffer) => {
      for (const m of chunk.toString().matchAll(/received (\d+)/g)) received = Math.max(received, Number(m[1]));
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once("exit", (_code, signal) => resolve(signal)));
    await waitFor(() => received === 20, 20_000, "child to receive every entry");
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");
    expect((await pendingEntries(r.client, r.keyPrefix)).filter((p) => p[1] === "doomed")).toHaveLength(20);

    const handled = new Map<string, number>();
    const survivor = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      consumer: "survivor",
      claimIdleMs: 300,
      claimIntervalMs: 100,
      batchSize: 7,
      handleMessage: async (m) => {
        handled.set(m.id, m.deliveries);
      },
    });
    await waitFor(() => handled.size === 20, 10_000, "survivor to handle every entry");
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "acks");
    await survivor.stop();
    expect([...handled.keys()].sort()).toEqual([...ids].sort());
    // Delivered once to the killed consumer, once more by the claim.
    expect([...handled.values()].every((d) => d === 2)).toBe(true);
  });

  it("dead-letters after maxDeliveries with the reason and every field, signed", async () => {
    const policy = stablePolicy();
    const fields = revocation(7, { note: "a=b\nc", empty: "", unicode: "révoqué ✓ 🔑" });
    const [id] = await publishRevocations(r.client, policy, r.keyPrefix, [fields]);
    let calls = 0;
    const c = startConsumer({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      consumer: "worker-a",
      maxDeliveries: 3,
      claimIdleMs: 100,
      claimIntervalMs: 50,
      handleMessage: async () => {
        calls++;
        throw new Error("still failing");
      },
    });
    await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 1, 10_000, "dead letter");
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "ack after dead letter");
    await c.stop();
    expect(calls).toBe(3);
    const [letter] = await readStream(r.client, deadLetterKey(r.keyPrefix));
    const f = letter!.fields;
    expect(f.reason).toBe("max_deliveries_exceeded");
    expect(f.src_stream).toBe(topic.stream);
    expect(f.src_id).toBe(id);
    expect(f.group).toBe(group);
    expect(f.consumer).toBe("worker-a");
    expect(f.deliveries).toBe("3");
    expect(f.error).toBe("still failing");
    expect(f.received_at).toMatch(RFC3339);
    expect(Math.abs(Date.parse(f.received_at!) - Date.now())).toBeLessThan(60_000);
    const signed = policy.signer!.signFields(topic.stream, fields);
    for (const [k, v] of Object.entries(signed)) expect(f[`src.${k}`]).toBe(v);
    const srcKeys = Object.keys(f).filter((k) => k.startsWith("src."));
    expect(srcKeys.sort()).toEqual(Object.keys(signed).map((k) => `src.${k}`).sort());
    expect(policy.signer!.verify(dlqStream, f)).toBe("valid");
    // Signed over the logical name, not the prefixed key.
    expect(policy.signer!.verify(deadLetterKey(r.keyPrefix), f)).toBe("invalid");
  });

  it("dead-letters a rejected handler error with its reason and other permanent errors as permanent_error", async () => {
    const policy = stablePolicy();
    const ids = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1), revocation(2), revocation(3)]);
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      handleMessage: async (m) => {
        if (m.fields.n === "1") throw new RejectedMessageError("tamper_on_replay", "content differs");
        if (m.fields.n === "2") throw new PermanentDomainError("zone unknown");
      },
    });
    await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 2, 5_000, "dead letters");
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "acks");
    await c.stop();
    const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
    expect(letters.map((l) => [l.fields.src_id, l.fields.reason, l.fields.deliveries])).toEqual([
      [ids[0], "tamper_on_replay", "1"],
      [ids[1], "permanent_error", "1"],
    ]);
  });

  for (const delivery of DELIVERIES) {
    it(`stable mode: unsigned and wrong-signature entries are dead-lettered, never handled (${delivery})`, async () => {
      const policy = stablePolicy();
      const unsigned = await rawAdd(r.client, r.keyPrefix, revocation(1));
      const forged = await rawAdd(r.client, r.keyPrefix, { ...revocation(2), _sig: "0".repeat(64) });
      const otherKey = new StreamSigner(Buffer.from(newKeyHex(), "hex"));
      const wrongKey = await rawAdd(r.client, r.keyPrefix, otherKey.signFields(topic.stream, revocation(3)));
      // Signed over the prefixed key instead of the logical stream name: invalid.
      const wrongStream = await rawAdd(r.client, r.keyPrefix, policy.signer!.signFields(key(), revocation(4)));
      const [good] = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(5)]);
      const handled: string[] = [];
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        delivery,
        handleMessage: async (m) => {
          handled.push(m.id);
        },
      });
      await waitFor(() => handled.length === 1, 5_000, "valid entry");
      await waitFor(async () => settledAll(delivery, 4), 5_000, "acks");
      await c.stop();
      expect(handled).toEqual([good]);
      const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
      expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([
        [unsigned, "signature_missing"],
        [forged, "signature_invalid"],
        [wrongKey, "signature_invalid"],
        [wrongStream, "signature_invalid"],
      ]);
    });
  }

  for (const delivery of DELIVERIES) {
    it(`dev mode: unsigned and wrong-signature entries are handled and counted (${delivery})`, async () => {
      const policy = devPolicy();
      await rawAdd(r.client, r.keyPrefix, revocation(1));
      await rawAdd(r.client, r.keyPrefix, { ...revocation(2), _sig: "f".repeat(64) });
      await publishRevocations(r.client, policy, r.keyPrefix, [revocation(3)]);
      const handled: string[] = [];
      const unverified: Record<string, number> = {};
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        delivery,
        metrics: { unverified: (kind, n) => (unverified[kind] = (unverified[kind] ?? 0) + n) },
        handleMessage: async (m) => {
          handled.push(m.fields.n!);
        },
      });
      await waitFor(() => handled.length === 3, 5_000, "all three handled");
      await c.stop();
      expect(handled).toEqual(["1", "2", "3"]);
      expect(unverified).toEqual({ missing: 1, invalid: 1 });
      expect(await r.client.exists(deadLetterKey(r.keyPrefix))).toBe(0);
    });
  }

  for (const delivery of DELIVERIES) {
    it(`schema-invalid entries are dead-lettered as schema_invalid and never block later entries (${delivery})`, async () => {
      const policy = stablePolicy();
      const [bad1, , bad2] = await publishRevocations(r.client, policy, r.keyPrefix, [
        { zone_id: "z", reason: "x" }, // no revocation anchor
        revocation(2),
        { reason: "x", session_id: "s" }, // no zone_id
        revocation(4),
      ]);
      const handled: string[] = [];
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        batchSize: 1,
        delivery,
        handleMessage: async (m) => {
          handled.push(m.fields.n!);
        },
      });
      await waitFor(() => handled.length === 2, 5_000, "valid entries");
      await waitFor(async () => settledAll(delivery, 2), 5_000, "acks");
      await c.stop();
      expect(handled).toEqual(["2", "4"]);
      const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
      expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([
        [bad1, "schema_invalid"],
        [bad2, "schema_invalid"],
      ]);
      expect(letters[0]!.fields.error).toMatch(/revocation anchor/);
    });
  }

  it("a restarted consumer re-reads its own pending entries first, then new ones", async () => {
    const policy = stablePolicy();
    const first = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1), revocation(2), revocation(3)]);
    let failures = 0;
    const c1 = startConsumer({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      handleMessage: async () => {
        failures++;
        throw new TransientError("not yet");
      },
    });
    await waitFor(() => failures === 3, 5_000, "first deliveries");
    await c1.stop();
    const later = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(4), revocation(5)]);
    const seen: Array<[string, number]> = [];
    const states = new Set<string>();
    const c2 = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      batchSize: 2,
      handleMessage: async (m: StreamMessage<unknown>) => {
        states.add(c2.consumer.state);
        seen.push([m.id, m.deliveries]);
      },
    });
    await waitFor(() => seen.length === 5, 5_000, "all entries");
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "acks");
    await c2.stop();
    expect(seen).toEqual([...first.map((id) => [id, 2]), ...later.map((id) => [id, 1])]);
    expect(states.has("draining-pending")).toBe(true);
    expect(c2.consumer.state).toBe("stopped");
  });

  it("entries trimmed while pending are acknowledged and counted, not retried (pending re-read and XAUTOCLAIM)", async () => {
    const policy = stablePolicy();
    const ids = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1), revocation(2), revocation(3), revocation(4)]);
    let failures = 0;
    const owner = startConsumer({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      handleMessage: async () => {
        failures++;
        throw new TransientError("fail");
      },
    });
    await waitFor(() => failures === 4, 5_000, "deliveries");
    await owner.stop();
    // Two entries vanish while pending; the PEL still lists them.
    await r.client.xdel(key(), ids[0]!, ids[1]!);
    expect(await pendingEntries(r.client, r.keyPrefix)).toHaveLength(4);

    // Same name: XREADGROUP ... 0 returns nil payloads for the deleted entries.
    let trimmed = 0;
    const handled: string[] = [];
    const restarted = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      metrics: { trimmed: (n) => (trimmed += n) },
      handleMessage: async (m) => {
        handled.push(m.id);
        if (m.id === ids[3]) throw new TransientError("keep pending");
      },
    });
    await waitFor(() => trimmed === 2 && handled.length === 2, 5_000, "trimmed entries acked");
    await restarted.stop();
    expect(handled).toEqual([ids[2], ids[3]]);
    expect((await pendingEntries(r.client, r.keyPrefix)).map((p) => p[0])).toEqual([ids[3]]);

    // Another consumer: XAUTOCLAIM reports the deleted id, which is acked and counted.
    await r.client.xdel(key(), ids[3]!);
    let claimedTrimmed = 0;
    const other = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      consumer: "c2",
      claimIdleMs: 50,
      claimIntervalMs: 50,
      metrics: { trimmed: (n) => (claimedTrimmed += n) },
      handleMessage: async () => {
        throw new Error("must not be called");
      },
    });
    await waitFor(() => claimedTrimmed === 1, 5_000, "claimed deleted id acked");
    await other.stop();
    expect(await pendingEntries(r.client, r.keyPrefix)).toEqual([]);
  });

  it("reclaimed entries already delivered maxDeliveries times are dead-lettered without calling the handler", async () => {
    const policy = stablePolicy();
    const [id] = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1)]);
    await r.client.xgroup("CREATE", key(), group, "0", "MKSTREAM");
    // Three consumers that crashed while handling it: read once, claimed twice, delivery count 3.
    await r.client.xreadgroup("GROUP", group, "crashed-0", "COUNT", 10, "STREAMS", key(), ">");
    for (let i = 1; i < 3; i++) await r.client.xclaim(key(), group, `crashed-${i}`, 0, id!);
    expect((await pendingEntries(r.client, r.keyPrefix))[0]![3]).toBe(3);
    let calls = 0;
    const c = startConsumer({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      consumer: "c9",
      maxDeliveries: 3,
      claimIdleMs: 50,
      claimIntervalMs: 50,
      handleMessage: async () => {
        calls++;
      },
    });
    await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 1, 5_000, "dead letter");
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "ack");
    await c.stop();
    expect(calls).toBe(0);
    const [letter] = await readStream(r.client, deadLetterKey(r.keyPrefix));
    expect(letter!.fields.reason).toBe("max_deliveries_exceeded");
    expect(letter!.fields.deliveries).toBe("4");
  });

  it("a failed dead-letter write means no ack: the entry stays pending and is dead-lettered once the write works", async () => {
    const policy = stablePolicy();
    // A string at the dead-letter key makes XADD fail with WRONGTYPE.
    await r.client.set(deadLetterKey(r.keyPrefix), "not a stream");
    const [bad] = await publishRevocations(r.client, policy, r.keyPrefix, [{ zone_id: "z", reason: "no anchor" }]);
    const errors: string[] = [];
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      claimIdleMs: 100,
      claimIntervalMs: 50,
      handleMessage: async () => undefined,
    });
    await waitFor(() => {
      if (c.consumer.lastError !== undefined) errors.push(c.consumer.lastError.message);
      return errors.some((e) => /WRONGTYPE/.test(e));
    }, 5_000, "dead-letter write failure");
    expect((await pendingEntries(r.client, r.keyPrefix)).map((p) => p[0])).toEqual([bad]);
    await r.client.del(deadLetterKey(r.keyPrefix));
    await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "ack after the write worked");
    await c.stop();
    const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
    expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([[bad, "schema_invalid"]]);
  });

  it("keeps running through Redis errors: a deleted stream and group are recreated and consumption goes on", async () => {
    const policy = stablePolicy();
    const handled: string[] = [];
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      retryBackoffMs: 20,
      handleMessage: async (m) => {
        handled.push(m.fields.n!);
      },
    });
    await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1)]);
    await waitFor(() => handled.length === 1, 5_000, "first entry");
    await r.client.del(key());
    await waitFor(() => c.consumer.lastError !== undefined, 5_000, "read error");
    expect(c.consumer.lastError!.message).toMatch(/NOGROUP|no longer exists/);
    expect(c.consumer.state).toBe("running");
    await waitFor(async () => ((await r.client.exists(key())) as number) === 1, 5_000, "group recreated");
    await publishRevocations(r.client, policy, r.keyPrefix, [revocation(2)]);
    await waitFor(() => handled.length === 2, 5_000, "entry after recovery");
    await c.stop();
    expect(handled).toEqual(["1", "2"]);
  });

  it("stops without loss: in-flight handlers finish and are acknowledged, nothing stays pending", async () => {
    const policy = stablePolicy();
    await publishRevocations(r.client, policy, r.keyPrefix, Array.from({ length: 10 }, (_, i) => revocation(i)));
    let started = 0;
    let finished = 0;
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      concurrency: 5,
      blockMs: 5_000,
      handleMessage: async () => {
        started++;
        await sleep(300);
        finished++;
      },
    });
    await waitFor(() => started === 5, 5_000, "five handlers in flight");
    const t0 = Date.now();
    c.controller.abort();
    expect(c.consumer.state).toBe("stopping");
    await c.done;
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(c.consumer.state).toBe("stopped");
    expect(finished).toBe(started);
    expect(finished).toBeGreaterThanOrEqual(5);
    expect(await pendingEntries(r.client, r.keyPrefix)).toEqual([]);
    const info = (await r.client.xinfo("GROUPS", key())) as unknown[][];
    const entriesRead = Number(info[0]![info[0]!.indexOf("entries-read") + 1]);
    expect(entriesRead).toBe(finished);
    await c.consumer.close();
    await c.consumer.close();
  });

  for (const delivery of DELIVERIES) {
    it(`an idle blocking read does not delay the stop beyond blockMs (${delivery})`, async () => {
      const policy = stablePolicy();
      const handled: string[] = [];
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        consumer: "host with spaces\n",
        blockMs: 10_000,
        delivery,
        handleMessage: async (m) => {
          handled.push(m.id);
        },
      });
      await waitFor(() => c.consumer.state === "running", 5_000, "running");
      await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1)]);
      await waitFor(() => handled.length === 1, 5_000, "entry read on the blocking connection");
      // The read connection carries the consumer's name, made acceptable to CLIENT SETNAME.
      expect(String(await r.client.client("LIST"))).toContain("name=host_with_spaces_:read ");
      await sleep(100);
      const t0 = Date.now();
      await c.stop();
      expect(Date.now() - t0).toBeLessThan(1_000);
    });
  }

  it("fan-out: every replica receives every message, no group or PEL is left, rejections dead-lettered once", async () => {
    const policy = stablePolicy();
    await r.client.xadd(key(), "*", "seed", "before start"); // "$" must skip it
    const seen = [new Set<string>(), new Set<string>(), new Set<string>()];
    let deadLettered = 0;
    const replicas = seen.map((set, i) =>
      startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        consumer: `replica-${i}`,
        delivery: "fanout",
        startId: "$",
        metrics: { deadLettered: (_reason, n) => (deadLettered += n) },
        handleMessage: async (m) => {
          set.add(m.id);
        },
      }),
    );
    await waitFor(() => replicas.every((x) => x.consumer.state === "running"), 5_000, "replicas running");
    await sleep(200);
    const ids = await publishRevocations(r.client, policy, r.keyPrefix, Array.from({ length: 25 }, (_, i) => revocation(i)));
    const rejected = await rawAdd(r.client, r.keyPrefix, revocation(99));
    await waitFor(() => seen.every((s) => s.size === 25), 5_000, "every replica to see every entry");
    await waitFor(async () => (await r.client.xlen(deadLetterKey(r.keyPrefix))) >= 1, 5_000, "dead letter");
    await sleep(300);
    await Promise.all(replicas.map((x) => x.stop()));
    for (const s of seen) expect([...s].sort()).toEqual([...ids].sort());
    expect(await r.client.xinfo("GROUPS", key())).toEqual([]);
    const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
    expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([[rejected, "signature_missing"]]);
    // counted by the replica that wrote it only
    expect(deadLettered).toBe(1);
  });

  it("fan-out: a failing handler is retried in process, then dead-lettered once across replicas", async () => {
    const policy = stablePolicy();
    const calls = [0, 0];
    const replicas = calls.map((_, i) =>
      startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        consumer: `replica-${i}`,
        delivery: "fanout",
        startId: "0",
        maxDeliveries: 3,
        retryBackoffMs: 10,
        handleMessage: async () => {
          calls[i]!++;
          throw new Error("cache reload failed");
        },
      }),
    );
    const [id] = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1)]);
    await waitFor(() => calls.every((n) => n === 3), 5_000, "three attempts per replica");
    await sleep(300);
    await Promise.all(replicas.map((x) => x.stop()));
    const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
    expect(letters.map((l) => [l.fields.src_id, l.fields.reason, l.fields.deliveries])).toEqual([[id, "max_deliveries_exceeded", "3"]]);
  });

  for (const delivery of DELIVERIES) {
    it(`never runs more than \`concurrency\` handlers at once (and does use them) (${delivery})`, async () => {
      const policy = stablePolicy();
      await publishRevocations(r.client, policy, r.keyPrefix, Array.from({ length: 40 }, (_, i) => revocation(i)));
      let active = 0;
      let maxActive = 0;
      let done = 0;
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        concurrency: 3,
        delivery,
        batchSize: 8,
        claimIdleMs: 50,
        claimIntervalMs: 20,
        handleMessage: async () => {
          active++;
          maxActive = Math.max(maxActive, active);
          await sleep(10 + Math.random() * 20);
          active--;
          done++;
        },
      });
      await waitFor(() => done >= 40, 10_000, "all handled");
      await c.stop();
      expect(maxActive).toBe(3);
    });
  }

  it("calls the metrics hooks with the right counts", async () => {
    const policy = stablePolicy();
    await publishRevocations(r.client, policy, r.keyPrefix, [
      revocation(1),
      revocation(2),
      { zone_id: "z", reason: "r" },
      revocation(4),
      revocation(5),
    ]);
    await rawAdd(r.client, r.keyPrefix, revocation(6));
    const counts = { received: 0, acked: 0, durations: 0, reclaimed: 0, trimmed: 0 };
    const deadLettered: Partial<Record<DeadLetterReason, number>> = {};
    const lags: number[] = [];
    const pendings: number[] = [];
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      statsIntervalMs: 50,
      metrics: {
        received: (n) => (counts.received += n),
        acked: (n) => (counts.acked += n),
        deadLettered: (reason, n) => (deadLettered[reason] = (deadLettered[reason] ?? 0) + n),
        reclaimed: (n) => (counts.reclaimed += n),
        trimmed: (n) => (counts.trimmed += n),
        handlerDuration: (s) => {
          expect(s).toBeGreaterThanOrEqual(0);
          counts.durations++;
        },
        lag: (n) => lags.push(n),
        pending: (n) => pendings.push(n),
      },
      handleMessage: async (m) => {
        if (m.fields.n === "5") throw new PermanentDomainError("no");
      },
    });
    await waitFor(() => counts.acked === 3 && Object.keys(deadLettered).length === 3 && lags.length > 0, 5_000, "metrics");
    await c.stop();
    expect(counts).toEqual({ received: 6, acked: 3, durations: 4, reclaimed: 0, trimmed: 0 });
    expect(deadLettered).toEqual({ schema_invalid: 1, permanent_error: 1, signature_missing: 1 });
    expect(lags.at(-1)).toBe(0);
    expect(pendings.at(-1)).toBe(0);
  });

  it("batch handler: entries in `failed` stay pending, the rest are acked in one XACK", async () => {
    const policy = stablePolicy();
    const ids = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1), revocation(2), revocation(3)]);
    const batches: number[] = [];
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      handleBatch: async (messages) => {
        batches.push(messages.length);
        return { failed: new Map([[messages[1]!.id, new TransientError("later")]]) };
      },
    });
    await waitFor(() => batches.length === 1, 5_000, "batch");
    await sleep(100);
    await c.stop();
    expect(batches).toEqual([3]);
    expect((await pendingEntries(r.client, r.keyPrefix)).map((p) => p[0])).toEqual([ids[1]]);
  });

  it("a stream with no dead-letter stream acknowledges and counts what it cannot dead-letter", async () => {
    const policy = stablePolicy();
    const { Topics } = await import("../registry.js");
    const discarded: Record<string, number> = {};
    const { StreamConsumer } = await import("./stream-consumer.js");
    const consumer = new StreamConsumer<Fields>({
      redis: r.client,
      topic: Topics.auditEventsDlq,
      group: Topics.auditEventsDlq.groups.observer,
      consumer: "obs",
      signing: policy,
      keyPrefix: r.keyPrefix,
      startId: "0",
      blockMs: 100,
      metrics: { discarded: (reason, n) => (discarded[reason] = (discarded[reason] ?? 0) + n) },
      handleMessage: async () => undefined,
    });
    const controller = new AbortController();
    const done = consumer.run(controller.signal);
    const auditDlqKey = streamKey(Topics.auditEventsDlq.stream, r.keyPrefix);
    await r.client.xadd(auditDlqKey, "*", "reason", "x"); // unsigned: rejected, and there is nowhere to dead-letter it
    await waitFor(() => discarded.signature_missing === 1, 5_000, "discard");
    controller.abort();
    await done;
    const pending = (await r.client.xpending(auditDlqKey, Topics.auditEventsDlq.groups.observer)) as [number];
    expect(pending[0]).toBe(0);
  });
});
