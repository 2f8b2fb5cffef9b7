/**
 * Composed steps (a service chooses its steps instead of disabling them), fan-out freshness
 * (`lastContactAt` across a real Redis outage, `lag`) and the byte bound on entries in flight.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createServer } from "node:net";

import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { TransientError } from "../errors.js";
import { closeClient, connectRedis } from "../redis.js";
import { StreamSigner } from "../signing.js";
import {
  deadLetterKey,
  newKeyHex,
  pendingEntries,
  publishRevocations,
  rawAdd,
  readStream,
  revocation,
  sleep,
  stablePolicy,
  startConsumer,
  waitFor,
} from "../test-support/harness.js";
import type { Step } from "./pipeline.js";
import { countOutcomes, deadLetterRejections, parseTopicSchema, verifySignature } from "./steps/index.js";

const DELIVERIES = ["group", "fanout"] as const;

describe.skipIf(!hasRedis())("composed consumer steps", () => {
  let r: TestRedis;
  beforeEach(async () => {
    r = await createTestRedis("pipe");
  });
  afterEach(async () => {
    await r.close();
  });

  for (const delivery of DELIVERIES) {
    it(`a pipeline without the signature step handles unsigned entries in stable mode (${delivery})`, async () => {
      const policy = stablePolicy();
      const unsigned = await rawAdd(r.client, r.keyPrefix, revocation(1));
      const invalid = await rawAdd(r.client, r.keyPrefix, { zone_id: "z", reason: "no anchor" });
      const handled: string[] = [];
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        delivery,
        steps: [countOutcomes(), deadLetterRejections(), parseTopicSchema()],
        handleMessage: async (m) => {
          handled.push(m.id);
        },
      });
      await waitFor(async () => handled.length === 1 && (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 1, 5_000, "handled and dead-lettered");
      await c.stop();
      expect(handled).toEqual([unsigned]);
      const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
      expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([[invalid, "schema_invalid"]]);
    });

    it(`the optional-signature step accepts a missing _sig and still rejects a wrong one (${delivery})`, async () => {
      const policy = stablePolicy();
      const unsigned = await rawAdd(r.client, r.keyPrefix, revocation(1));
      const forged = await rawAdd(r.client, r.keyPrefix, { ...revocation(2), _sig: "0".repeat(64) });
      const otherKey = await rawAdd(r.client, r.keyPrefix, new StreamSigner(Buffer.from(newKeyHex(), "hex")).signFields("caracal:sessions:revoke", revocation(3)));
      const [signed] = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(4)]);
      const handled: string[] = [];
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        delivery,
        steps: [deadLetterRejections(), verifySignature(policy, { missing: "accept" }), parseTopicSchema()],
        handleMessage: async (m) => {
          handled.push(m.id);
        },
      });
      await waitFor(async () => handled.length === 2 && (await r.client.xlen(deadLetterKey(r.keyPrefix))) === 2, 5_000, "two handled, two rejected");
      if (delivery === "group") await waitFor(async () => (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "acks");
      await c.stop();
      expect(handled).toEqual([unsigned, signed]);
      const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
      expect(letters.map((l) => [l.fields.src_id, l.fields.reason])).toEqual([
        [forged, "signature_invalid"],
        [otherKey, "signature_invalid"],
      ]);
    });

    it(`without a delivery bound a failing entry is retried past the default of 5, never dead-lettered (${delivery})`, async () => {
      const policy = stablePolicy();
      await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1)]);
      let calls = 0;
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: r.keyPrefix,
        delivery,
        claimIdleMs: 20,
        claimIntervalMs: 20,
        retryBackoffMs: 5,
        steps: [deadLetterRejections(), verifySignature(policy), parseTopicSchema()],
        handleMessage: async () => {
          calls++;
          throw new TransientError("not yet");
        },
      });
      await waitFor(() => calls >= 8, 10_000, "eight deliveries");
      await c.stop();
      expect(await r.client.exists(deadLetterKey(r.keyPrefix))).toBe(0);
      if (delivery === "group") expect((await pendingEntries(r.client, r.keyPrefix)).length).toBe(1);
    });
  }

  it("steps run in the declared order, outermost first, and a custom step may settle entries itself", async () => {
    const policy = stablePolicy();
    const [, two] = await publishRevocations(r.client, policy, r.keyPrefix, [revocation(1), revocation(2)]);
    const order: string[] = [];
    const tag =
      (name: string): Step =>
      (next) =>
      async (batch, context) => {
        order.push(`${name}>`);
        const outcomes = await next(batch, context);
        order.push(`<${name}`);
        return outcomes;
      };
    // A custom step: drops (dead-letters) entry 2 as a domain rejection before the handler sees it.
    const dropTwo: Step = (next) => async (batch, context) => {
      const outcomes = await next(batch.filter((d) => d.fields.n !== "2"), context);
      for (const d of batch) if (d.fields.n === "2") outcomes.set(d.id, { kind: "reject", reason: "schema_invalid", error: "two is not welcome" });
      return outcomes;
    };
    const handled: string[] = [];
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      steps: [tag("a"), deadLetterRejections(), tag("b"), dropTwo, verifySignature(policy), parseTopicSchema()],
      handleBatch: async (messages) => {
        order.push("handler");
        for (const m of messages) handled.push(m.fields.n!);
      },
    });
    await waitFor(async () => handled.length === 1 && (await pendingEntries(r.client, r.keyPrefix)).length === 0, 5_000, "settled");
    await c.stop();
    expect(order).toEqual(["a>", "b>", "handler", "<b", "<a"]);
    expect(handled).toEqual(["1"]);
    const letters = await readStream(r.client, deadLetterKey(r.keyPrefix));
    expect(letters.map((l) => [l.fields.src_id, l.fields.reason, l.fields.error])).toEqual([[two, "schema_invalid", "two is not welcome"]]);
  });

  it("bounds the bytes of entries in flight (read-ahead included), and an entry larger than the bound still passes", async () => {
    const policy = stablePolicy();
    const KIB = 1024;
    const body = "x".repeat(16 * KIB);
    const run = async (maxInFlightBytes: number | undefined): Promise<number> => {
      const prefix = `${r.keyPrefix}${maxInFlightBytes ?? "default"}:`;
      await publishRevocations(r.client, policy, prefix, Array.from({ length: 40 }, (_, i) => revocation(i, { pad: body })));
      await publishRevocations(r.client, policy, prefix, [revocation(99, { pad: "y".repeat(256 * KIB) })]);
      let peak = 0;
      let handled = 0;
      let huge = false;
      const c = startConsumer<unknown>({
        redis: r.client,
        signing: policy,
        keyPrefix: prefix,
        batchSize: 3,
        concurrency: 4,
        ...(maxInFlightBytes !== undefined ? { maxInFlightBytes } : {}),
        handleBatch: async (messages) => {
          // The peak while only ordinary entries are in flight; the huge one is checked apart.
          if (messages.some((m) => m.fields.n === "99")) huge = true;
          if (!huge) peak = Math.max(peak, c.consumer.inFlightBytes);
          await sleep(15);
          if (!huge) peak = Math.max(peak, c.consumer.inFlightBytes);
          handled += messages.length;
        },
      });
      await waitFor(() => handled === 41, 10_000, "every entry handled");
      await c.stop();
      expect(c.consumer.inFlightBytes).toBe(0);
      return peak;
    };
    const bounded = await run(64 * KIB);
    const unbounded = await run(undefined);
    // Bound plus one read: the reader waits at the bound and sizes reads to the room left. The huge entry
    // (four times the bound) was handled all the same.
    expect(bounded).toBeLessThanOrEqual(64 * KIB + 3 * 17 * KIB);
    expect(unbounded).toBeGreaterThan(64 * KIB + 3 * 17 * KIB);
  });
});

/** A free TCP port (bound and released), for a private redis-server. */
async function sparePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

async function startRedisServer(port: number): Promise<ChildProcess> {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const probe = connectRedis(`redis://127.0.0.1:${port}`);
  probe.on("error", () => undefined);
  try {
    await waitFor(async () => (await probe.ping().catch(() => "")) === "PONG", 10_000, "private redis-server");
  } finally {
    probe.disconnect();
  }
  return child;
}

async function stopRedisServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
}

describe.skipIf(!hasRedis())("fan-out freshness", () => {
  it("an idle fan-out consumer keeps lastContactAt fresh; a Redis outage stops it, and it resumes after restart", async () => {
    const port = await sparePort();
    let server = await startRedisServer(port);
    const redis = connectRedis(`redis://127.0.0.1:${port}`);
    redis.on("error", () => undefined);
    const contacts: number[] = [];
    const lags: number[] = [];
    const policy = stablePolicy();
    const c = startConsumer<unknown>({
      redis,
      signing: policy,
      keyPrefix: "fresh:",
      delivery: "fanout",
      startId: "$",
      blockMs: 100,
      statsIntervalMs: 50,
      retryBackoffMs: 20,
      metrics: { contact: (at) => contacts.push(at), lag: (n) => lags.push(n) },
      handleMessage: async () => undefined,
    });
    try {
      await waitFor(() => c.consumer.state === "running", 5_000, "running");
      // Idle stream: every empty reply after BLOCK is contact.
      for (let i = 0; i < 5; i++) {
        await sleep(150);
        expect(Date.now() - c.consumer.lastContactAt!).toBeLessThan(400);
      }
      expect(contacts.length).toBeGreaterThanOrEqual(5);
      expect(c.consumer.lag).toBe(0);

      await stopRedisServer(server);
      const stoppedAt = Date.now();
      await sleep(1_000);
      const during = c.consumer.lastContactAt!;
      expect(during).toBeLessThanOrEqual(stoppedAt + 150);
      expect(Date.now() - during).toBeGreaterThanOrEqual(900);

      server = await startRedisServer(port);
      const restartedAt = Date.now();
      await waitFor(() => (c.consumer.lastContactAt ?? 0) > restartedAt, 10_000, "contact after restart");
      expect(c.consumer.state).toBe("running");
    } finally {
      await c.stop();
      await closeClient(redis).catch(() => undefined);
      await stopRedisServer(server);
    }
  }, 30_000);

  it("fan-out lag counts the entries after the last one read, and falls to 0 once caught up", async () => {
    const r = await createTestRedis("lag");
    const policy = stablePolicy();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let handled = 0;
    const c = startConsumer<unknown>({
      redis: r.client,
      signing: policy,
      keyPrefix: r.keyPrefix,
      delivery: "fanout",
      startId: "$",
      batchSize: 1,
      statsIntervalMs: 30,
      handleMessage: async () => {
        await gate;
        handled++;
      },
    });
    try {
      await waitFor(() => c.consumer.state === "running", 5_000, "running");
      await publishRevocations(r.client, policy, r.keyPrefix, Array.from({ length: 10 }, (_, i) => revocation(i)));
      // The first entry is held by the handler: all ten are after the last id settled.
      await waitFor(() => c.consumer.lag === 10, 5_000, "lag 10");
      release();
      await waitFor(() => handled === 10, 5_000, "all handled");
      await waitFor(() => c.consumer.lag === 0, 5_000, "lag 0");
    } finally {
      await c.stop();
      await r.close();
    }
  });
});
