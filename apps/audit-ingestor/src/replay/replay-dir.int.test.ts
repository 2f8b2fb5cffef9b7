import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { replayFileName, writeReplayFile } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { startAuditIngestor } from "../app.js";
import { makeChain, makeEvent, makeFrame } from "../test-support/events.js";
import { deadLetters, silentLogger, testConfig } from "../test-support/harness.js";

describe.skipIf(!hasPostgres() || !hasRedis())("replay of AUDIT_REPLAY_DIR at start", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  let dir: string;
  beforeEach(async () => {
    db = await createMigratedDatabase();
    redis = await createTestRedis("audit-replay");
    dir = await mkdtemp(join(tmpdir(), "audit-replay-"));
  });
  afterEach(async () => {
    await redis.close();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  async function runOnce() {
    const controller = new AbortController();
    const app = await startAuditIngestor(testConfig({ databaseUrl: db.url, redisUrl: redis.url, keyPrefix: redis.keyPrefix, extra: { AUDIT_REPLAY_DIR: dir } }), {
      logger: silentLogger,
      signal: controller.signal,
      blockMs: 200,
    });
    await app.replayed;
    controller.abort();
    await app.done;
  }

  const count = async () => (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events")).rows[0]!.n;

  it("ingests the publisher's files once, dead-letters bad lines, deletes files only when done, ignores .tmp", async () => {
    const chain = makeChain(5, "z");
    await writeReplayFile(dir, replayFileName(Date.now(), 42, 1), chain.slice(0, 3).map((e) => makeFrame(e)));
    const forged = makeFrame(makeEvent({ zone_id: "z" }));
    forged.sig = "00".repeat(32);
    const name2 = replayFileName(Date.now(), 42, 2);
    const lines = [JSON.stringify(makeFrame(chain[3]!)), "{garbled", JSON.stringify(forged), "", JSON.stringify(makeFrame(chain[4]!))].join("\n");
    await writeFile(join(dir, name2), `${lines}\n`);
    await writeFile(join(dir, `${replayFileName(Date.now(), 42, 3)}.abcd.tmp`), JSON.stringify(makeFrame(makeEvent({ zone_id: "z" }))));

    await runOnce();
    expect(await count()).toBe(5);
    const seqs = await db.pool.query<{ id: string; chain_seq: string; tamper_detected: boolean }>("SELECT id, chain_seq, tamper_detected FROM audit_events ORDER BY chain_seq");
    expect(seqs.rows.map((r) => r.id)).toEqual(chain.map((e) => e.id));
    expect(seqs.rows.every((r) => !r.tamper_detected)).toBe(true);
    const letters = await deadLetters(redis.client, redis.keyPrefix);
    expect(letters.map((l) => l.reason).sort()).toEqual(["parse_error", "signature_invalid"]);
    expect(letters.find((l) => l.reason === "parse_error")!.src_id).toBe(`replay:${name2}:2`);
    expect((await readdir(dir)).filter((n) => n.endsWith(".ndjson"))).toEqual([]);
    expect((await readdir(dir)).some((n) => n.endsWith(".tmp"))).toBe(true);

    // the same events replayed again (a file re-published and spilled twice): no-ops
    await writeReplayFile(dir, replayFileName(Date.now(), 43, 1), chain.map((e) => makeFrame(e)));
    await runOnce();
    expect(await count()).toBe(5);
    expect((await readdir(dir)).filter((n) => n.endsWith(".ndjson"))).toEqual([]);
  });

  it("keeps a file whose lines cannot be stored", async () => {
    const name = replayFileName(Date.now(), 7, 1);
    await writeReplayFile(dir, name, [makeFrame(makeEvent({ zone_id: "z", occurred_at: "0000-01-01T00:00:00Z" }))]);
    const controller = new AbortController();
    const app = await startAuditIngestor(testConfig({ databaseUrl: db.url, redisUrl: redis.url, keyPrefix: redis.keyPrefix, extra: { AUDIT_REPLAY_DIR: dir } }), {
      logger: silentLogger,
      signal: controller.signal,
      blockMs: 200,
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(await readdir(dir)).toContain(name);
    controller.abort();
    await app.done;
  });
});
