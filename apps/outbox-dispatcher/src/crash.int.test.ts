/**
 * The real dispatcher (dist/main.js, built by `pnpm build`) as a child process: killed with SIGKILL in
 * the middle of dispatching, a second one finishes the job; then SIGTERM stops it cleanly.
 */
import type { ChildProcess } from "node:child_process";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { Topics, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis, startTcpProxy, withDatabase } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { TEST_KEY_HEX, readStream, signer, waitFor } from "./test-support/harness.js";

const MAIN = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const STREAM = Topics.keysInvalidate.stream;

interface Child {
  process: ChildProcess;
  port: Promise<number>;
  exited: Promise<number | null>;
}

function spawnDispatcher(db: TestDatabase, redis: TestRedis, env: Record<string, string> = {}): Child {
  const child = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH ?? "",
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      STREAMS_HMAC_KEY: TEST_KEY_HEX,
      CARACAL_KEY_PREFIX: redis.keyPrefix,
      PORT: "0",
      LOG_LEVEL: "info",
      CARACAL_OUTBOX_LEASE_MS: "1000",
      CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS: "500",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const port = new Promise<number>((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const m = /"port":(\d+)[^\n]*outbox dispatcher running/.exec(output);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", () => reject(new Error(`dispatcher exited before it was running:\n${output}`)));
  });
  port.catch(() => undefined);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { process: child, port, exited };
}

describe.skipIf(!hasRedis() || !hasPostgres())("dispatcher process", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const children: Child[] = [];

  beforeEach(async () => {
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`pnpm build\` first (turbo's test task does)`);
    db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    redis = await createTestRedis("crash");
  });
  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.process.exitCode === null && c.process.signalCode === null) c.process.kill("SIGKILL");
      await c.exited;
    }
    await redis.close();
    await db.drop();
  });

  it("loses no row when killed with SIGKILL mid-batch; duplicates carry the same outbox_id", async () => {
    const total = 3000;
    await db.pool.query(
      `INSERT INTO event_outbox (id, stream_name, payload_json) SELECT 'row-' || lpad(g::text, 5, '0'), $1, jsonb_build_object('zone_id', 'z' || g) FROM generate_series(1, $2) g`,
      [STREAM, total],
    );
    const first = spawnDispatcher(db, redis, { CARACAL_OUTBOX_BATCH: "10" });
    children.push(first);
    const key = streamKey(STREAM, redis.keyPrefix);
    await waitFor(async () => (await redis.client.xlen(key)) >= 300, 30_000, "the first dispatcher to be under way");
    first.process.kill("SIGKILL");
    await first.exited;
    const { rows: left } = await db.pool.query(
      "SELECT count(*)::int AS pending, count(*) FILTER (WHERE locked_until IS NOT NULL)::int AS leased FROM event_outbox WHERE dispatched_at IS NULL",
    );
    // Killed mid-way: rows are left, and at least one batch was leased (claimed, maybe sent) but not marked.
    expect(left[0].pending).toBeGreaterThan(0);
    expect(left[0].leased).toBeGreaterThan(0);

    const second = spawnDispatcher(db, redis, { CARACAL_OUTBOX_BATCH: "100" });
    children.push(second);
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NULL")).rowCount === 0, 60_000, "every row dispatched");
    const entries = await readStream(redis.client, STREAM, redis.keyPrefix);
    const ids = new Set(entries.map((e) => e.fields.outbox_id));
    expect(ids.size).toBe(total);
    // Only rows sent but not yet marked at the kill go out twice: at most two batches (the batch being
    // published and the previous one, whose outcomes ride with the next claim).
    expect(entries.length - total).toBeLessThanOrEqual(20);
    expect(entries.every((e) => signer.verify(STREAM, e.fields) === "valid")).toBe(true);
    // Order holds for the first sending of every row: ids appear in insertion order when duplicates are dropped.
    const seen = new Set<string>();
    const firstSeen = entries.map((e) => e.fields.outbox_id as string).filter((id) => (seen.has(id) ? false : (seen.add(id), true)));
    expect(firstSeen).toEqual([...firstSeen].sort());

    // Ops endpoints, then a clean SIGTERM stop.
    const port = await second.port;
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/caracal_outbox_pending_rows 0/);
    expect(metrics).toMatch(/caracal_outbox_oldest_pending_age_seconds 0/);
    expect(metrics).toMatch(/caracal_outbox_dispatched_total\{stream="caracal.keys.invalidate"\} \d+/);
    expect(metrics).toMatch(/caracal_outbox_batch_duration_seconds_count \d+/);
    second.process.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });

  it("names every bad variable and exits 1 without starting", async () => {
    const child = spawnDispatcher(db, redis, { CARACAL_OUTBOX_BATCH: "zero", CARACAL_MODE: "prod", REDIS_URL: "http://nope" });
    children.push(child);
    let stdout = "";
    child.process.stdout?.on("data", (c: Buffer) => (stdout += c.toString()));
    expect(await child.exited).toBe(1);
    for (const v of ["CARACAL_OUTBOX_BATCH", "CARACAL_MODE", "REDIS_URL"]) expect(stdout).toContain(v);
  });

  it("rides out PostgreSQL dropping its connections: not ready meanwhile, resumes by itself, loses no row (15.2)", async () => {
    const proxy = await startTcpProxy("127.0.0.1", Number(new URL(db.url).port || 5432));
    try {
      const viaProxy = withDatabase(db.url.replace(/@[^/]+\//, `@127.0.0.1:${proxy.port}/`), db.name);
      const child = spawnDispatcher(db, redis, { DATABASE_URL: viaProxy, CARACAL_OUTBOX_POLL_MS: "50" });
      children.push(child);
      const port = await child.port;
      const insert = (from: number, to: number) =>
        db.pool.query(
          `INSERT INTO event_outbox (id, stream_name, payload_json) SELECT 'cut-' || lpad(g::text, 4, '0'), $1, jsonb_build_object('zone_id', 'z' || g) FROM generate_series($2::int, $3::int) g`,
          [STREAM, from, to],
        );
      await insert(1, 50);
      await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NULL")).rowCount === 0, 30_000, "the first rows dispatched");
      // the held connection, the LISTEN connection and every idle one drop at once
      await proxy.cut();
      await insert(51, 100);
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 503, 15_000, "not ready while PostgreSQL is away");
      await new Promise((r) => setTimeout(r, 1_500));
      expect(child.process.exitCode).toBeNull();
      expect(child.process.signalCode).toBeNull();
      await proxy.restore();
      await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NULL")).rowCount === 0, 60_000, "every row dispatched after the cut");
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 15_000, "ready again");
      const ids = new Set((await readStream(redis.client, STREAM, redis.keyPrefix)).map((e) => e.fields.outbox_id));
      expect(ids.size).toBe(100);
      child.process.kill("SIGTERM");
      expect(await child.exited).toBe(0);
    } finally {
      await proxy.close();
    }
  }, 120_000);

  it("never writes a password of DATABASE_URL or REDIS_URL to its output (15.5)", async () => {
    const secret = "S3cretPassw0rd";
    const dbUrl = new URL(db.url);
    dbUrl.password = secret;
    dbUrl.searchParams.set("password", secret); // trust authentication: accepted whatever it says
    const child = spawnDispatcher(db, redis, { DATABASE_URL: dbUrl.toString(), REDIS_URL: redis.url.replace("redis://", `redis://:${secret}@`), LOG_LEVEL: "debug" });
    children.push(child);
    let output = "";
    child.process.stdout?.on("data", (c: Buffer) => (output += c.toString()));
    child.process.stderr?.on("data", (c: Buffer) => (output += c.toString()));
    await child.port.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 500));
    child.process.kill("SIGTERM");
    await child.exited;
    expect(output).toContain("outbox-dispatcher starting");
    expect(output).not.toContain(secret);
  });
});
