import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { afterEach, describe, expect, it } from "vitest";

import { sleep } from "@caracal/streams-core";

import { LeaseKeeper, RedisLease } from "./lease.js";
import type { LeaseLossReason } from "./lease.js";

let redis: TestRedis | undefined;
afterEach(async () => {
  await redis?.close();
  redis = undefined;
});

async function until(predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await sleep(10);
  }
}

describe.skipIf(!hasRedis())("RedisLease", () => {
  it("is exclusive, and every acquisition takes a higher fencing token", async () => {
    redis = await createTestRedis("lease");
    const a = new RedisLease({ redis: redis.client, key: "audit:leader:export", keyPrefix: redis.keyPrefix, ttlMs: 2_000 });
    const b = new RedisLease({ redis: redis.connect(), key: "audit:leader:export", keyPrefix: redis.keyPrefix, ttlMs: 2_000 });
    expect(await a.tryAcquire()).toBe(true);
    const first = a.fencingToken;
    expect(first).toBeTypeOf("number");
    expect(await b.tryAcquire()).toBe(false);
    expect(b.held).toBe(false);
    expect(b.fencingToken).toBeUndefined();
    expect(await redis.client.get(`${redis.keyPrefix}audit:leader:export`)).toBe(a.owner);

    await a.release();
    expect(a.held).toBe(false);
    expect(a.signal.aborted).toBe(true);
    expect(await redis.client.exists(`${redis.keyPrefix}audit:leader:export`)).toBe(0);
    expect(await b.tryAcquire()).toBe(true);
    expect(b.fencingToken).toBeGreaterThan(first ?? Infinity);
    const second = b.fencingToken ?? 0;
    await b.release();
    expect(await a.tryAcquire()).toBe(true);
    expect(a.fencingToken).toBeGreaterThan(second);
    await a.release();
  });

  it("renews itself past its TTL while held", async () => {
    redis = await createTestRedis("lease");
    const lease = new RedisLease({ redis: redis.client, key: "l", keyPrefix: redis.keyPrefix, ttlMs: 300 });
    expect(await lease.tryAcquire()).toBe(true);
    await sleep(1_000);
    expect(lease.held).toBe(true);
    expect(lease.signal.aborted).toBe(false);
    const pttl = await redis.client.pttl(`${redis.keyPrefix}l`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(300);
    await lease.release();
  });

  it("fires the lost signal when another owner took the key (renew rejected)", async () => {
    redis = await createTestRedis("lease");
    const reasons: LeaseLossReason[] = [];
    const lease = new RedisLease({ redis: redis.client, key: "l", keyPrefix: redis.keyPrefix, ttlMs: 300, onLost: (r) => reasons.push(r) });
    expect(await lease.tryAcquire()).toBe(true);
    const signal = lease.signal;
    await redis.client.set(`${redis.keyPrefix}l`, "someone-else", "PX", 5_000);
    await until(() => signal.aborted);
    expect(reasons).toEqual(["renew_rejected"]);
    expect(lease.held).toBe(false);
    await lease.release();
    // release is compare-and-DEL: the other owner's key survives
    expect(await redis.client.get(`${redis.keyPrefix}l`)).toBe("someone-else");
  });

  it("expires locally when Redis cannot be reached to renew", async () => {
    redis = await createTestRedis("lease");
    const conn = redis.connect();
    const reasons: LeaseLossReason[] = [];
    const lease = new RedisLease({ redis: conn, key: "l", keyPrefix: redis.keyPrefix, ttlMs: 400, onLost: (r) => reasons.push(r) });
    expect(await lease.tryAcquire()).toBe(true);
    const acquiredAt = Date.now();
    conn.disconnect();
    await until(() => lease.signal.aborted);
    expect(reasons).toEqual(["expired"]);
    // never believed held beyond the TTL measured from the last confirmed renewal
    expect(Date.now() - acquiredAt).toBeLessThan(400 + 400);
    expect(lease.held).toBe(false);
  });
});

describe.skipIf(!hasRedis())("LeaseKeeper", () => {
  it("runs the task on one replica at a time and hands over when the leader stops", async () => {
    redis = await createTestRedis("keeper");
    const running = new Set<string>();
    let overlap = false;
    const runs: Array<{ who: string; token: number }> = [];
    const keeper = (who: string) =>
      new LeaseKeeper({
        lease: new RedisLease({ redis: redis!.connect(), key: "k", keyPrefix: redis!.keyPrefix, ttlMs: 300 }),
        acquireEveryMs: 20,
        taskEveryMs: 10,
        task: async ({ fencingToken }) => {
          if (running.size > 0) overlap = true;
          running.add(who);
          runs.push({ who, token: fencingToken });
          await sleep(15);
          running.delete(who);
        },
      });
    const stopA = new AbortController();
    const stopB = new AbortController();
    const leaderChanges: boolean[] = [];
    const a = keeper("a");
    const runA = a.run(stopA.signal);
    await until(() => runs.length > 0);
    const b = new LeaseKeeper({
      lease: new RedisLease({ redis: redis.connect(), key: "k", keyPrefix: redis.keyPrefix, ttlMs: 300 }),
      acquireEveryMs: 20,
      taskEveryMs: 10,
      onLeaderChange: (held) => leaderChanges.push(held),
      task: async ({ fencingToken }) => {
        if (running.size > 0) overlap = true;
        running.add("b");
        runs.push({ who: "b", token: fencingToken });
        await sleep(15);
        running.delete("b");
      },
    });
    const runB = b.run(stopB.signal);
    await sleep(300);
    expect(runs.every((r) => r.who === "a")).toBe(true);
    stopA.abort();
    await runA;
    await until(() => runs.some((r) => r.who === "b"));
    stopB.abort();
    await runB;
    expect(overlap).toBe(false);
    const tokenA = runs.find((r) => r.who === "a")?.token ?? Infinity;
    const tokenB = runs.find((r) => r.who === "b")?.token ?? -Infinity;
    expect(tokenB).toBeGreaterThan(tokenA);
    expect(leaderChanges).toEqual([true, false]);
    expect(await redis.client.exists(`${redis.keyPrefix}k`)).toBe(0);
  });

  it("stops the task when the lease is lost and re-acquires later with a new token", async () => {
    redis = await createTestRedis("keeper");
    const tokens: number[] = [];
    let abortedWhileRunning = 0;
    const keeper = new LeaseKeeper({
      lease: new RedisLease({ redis: redis.connect(), key: "k", keyPrefix: redis.keyPrefix, ttlMs: 300 }),
      acquireEveryMs: 20,
      taskEveryMs: 10,
      task: async ({ signal, fencingToken }) => {
        if (!tokens.includes(fencingToken)) tokens.push(fencingToken);
        await sleep(5_000, signal);
        if (signal.aborted) abortedWhileRunning++;
      },
    });
    const stop = new AbortController();
    const run = keeper.run(stop.signal);
    await until(() => tokens.length === 1);
    // another owner steals the key for a while: the keeper's renewal is rejected
    await redis.client.set(`${redis.keyPrefix}k`, "thief", "PX", 200);
    await until(() => tokens.length === 2, 5_000);
    stop.abort();
    await run;
    expect(abortedWhileRunning).toBeGreaterThanOrEqual(1);
    expect(tokens[1]).toBeGreaterThan(tokens[0] ?? Infinity);
  });
});
