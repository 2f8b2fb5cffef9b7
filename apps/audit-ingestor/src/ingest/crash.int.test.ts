/**
 * Crash safety with real processes: ingestors killed with SIGKILL (one right after a commit and before its
 * ack, one at an arbitrary moment mid-stream), then a restarted one: every event is stored exactly once,
 * with one gap-free, verifiable chain per zone. Finally SIGTERM stops the last one cleanly.
 */
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { makeEvent, makeFrame, TEST_AUDIT_KEY } from "../test-support/events.js";
import { AUDIT_STREAM, pendingCount, testEnv, testPublisher, waitFor } from "../test-support/harness.js";
import { verifyZone } from "../verify/ledger-verify.js";

const SCRIPT = fileURLToPath(new URL("../test-support/ingestor-process.ts", import.meta.url));
const APP_DIR = fileURLToPath(new URL("../..", import.meta.url));

interface Child {
  process: ChildProcess;
  ready: Promise<number>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}

describe.skipIf(!hasPostgres() || !hasRedis())("ingestor processes killed with SIGKILL", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const children: Child[] = [];

  beforeEach(async () => {
    db = await createMigratedDatabase();
    redis = await createTestRedis("audit-crash");
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill("SIGKILL");
    await redis.close();
    await db.drop();
  });

  function spawnIngestor(consumer: string, extra: Record<string, string> = {}): Child {
    const env = { PATH: process.env.PATH ?? "", ...testEnv({ databaseUrl: db.url, redisUrl: redis.url, keyPrefix: redis.keyPrefix, consumer, extra: { AUDIT_BATCH_SIZE: "50", ...extra } }) };
    const child = spawn(process.execPath, ["--import", "tsx", SCRIPT], { cwd: APP_DIR, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout?.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr?.on("data", (c: Buffer) => (out += c.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    const ready = new Promise<number>((resolve, reject) => {
      child.stdout?.on("data", () => {
        const m = /READY (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      void exited.then(() => reject(new Error(`ingestor exited before READY:\n${out}`)));
    });
    ready.catch(() => undefined);
    const c = { process: child, ready, exited, output: () => out };
    children.push(c);
    return c;
  }

  const rows = async () => (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events")).rows[0]!.n;

  it("SIGKILL between commit and ack, and SIGKILL mid-stream, then restart: every event stored once, chains intact", async () => {
    const zones = ["a", "b", "c"];
    const events = Array.from({ length: 3000 }, (_, i) => makeEvent({ zone_id: zones[i % 3]! }));
    const publisher = testPublisher(redis.client, redis.keyPrefix);
    for (let i = 0; i < events.length; i += 500) {
      await publisher.publishBatch(events.slice(i, i + 500).map((e) => ({ stream: AUDIT_STREAM, fields: makeFrame(e) })));
    }

    // 1) killed by itself right after its 4th commit: 4 batches stored, the last one never acked (the byte
    // bound set high, so that reads are sized by AUDIT_BATCH_SIZE alone and each batch is full)
    const first = spawnIngestor("node-a", { CRASH_AFTER_BATCHES: "4", AUDIT_MAX_INFLIGHT_BYTES: String(1024 * 1024 * 1024) });
    const firstExit = await first.exited;
    expect(firstExit.signal).toBe("SIGKILL");
    const afterFirst = await rows();
    expect(afterFirst).toBeGreaterThanOrEqual(200);
    expect(await pendingCount(redis.client, redis.keyPrefix)).toBeGreaterThan(0);

    // 2) another node killed from outside at an arbitrary point while it ingests
    const second = spawnIngestor("node-b", { AUDIT_BATCH_SIZE: "20" });
    await second.ready;
    await waitFor("node-b mid-stream", async () => (await rows()) > afterFirst + 300, 60_000, 20);
    second.process.kill("SIGKILL");
    expect((await second.exited).signal).toBe("SIGKILL");
    expect(await rows()).toBeLessThan(3000);

    // 3) node-a restarts: drains its own pending entries, reclaims node-b's (idle > 1 s), reads the rest
    const third = spawnIngestor("node-a");
    const port = await third.ready;
    await waitFor("3000 rows", async () => (await rows()) === 3000, 90_000, 200);
    await waitFor("nothing pending", async () => (await pendingCount(redis.client, redis.keyPrefix)) === 0, 30_000);
    const distinct = await db.pool.query<{ n: number }>("SELECT count(DISTINCT id)::int AS n FROM audit_events");
    expect(distinct.rows[0]!.n).toBe(3000);
    for (const z of zones) {
      const seqs = await db.pool.query<{ chain_seq: string }>("SELECT chain_seq FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq", [z]);
      expect(seqs.rows.map((r) => Number(r.chain_seq))).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
      expect((await verifyZone(z, {}, { pool: db.pool, auditKey: TEST_AUDIT_KEY, gapGraceMs: 0 })).breaks).toEqual([]);
    }
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/caracal_audit_events_duplicates_total [1-9]/);

    // 4) SIGTERM: a clean stop
    third.process.kill("SIGTERM");
    const exit = await third.exited;
    expect(exit.code).toBe(0);
    expect(third.output()).toContain("STOPPED");
  });
});
