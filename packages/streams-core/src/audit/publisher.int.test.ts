import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import type { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";

import { decodeFieldList } from "../codec.js";
import type { Fields } from "../codec.js";
import { connectRedis } from "../redis.js";
import { Topics, streamKey } from "../registry.js";
import type { AuditEvent } from "../schemas.js";
import { StreamSigner } from "../signing.js";
import type { SignaturePolicy } from "../signing.js";
import { auditEvent, freePort, spareRedis, waitFor } from "../test-support/audit-helpers.js";
import type { SpareRedis } from "../test-support/audit-helpers.js";
import { encodeAuditFrame, verifyAuditFrame } from "./frame.js";
import { AuditPublisher, AuditPublisherClosedError } from "./publisher.js";
import type { AuditPublisherOptions } from "./publisher.js";
import { listReplayFiles, readReplayFile, replayFileName, writeReplayFile } from "./replay-files.js";

const STREAM = Topics.auditEvents.stream;
const auditKey = randomBytes(32);
const streamSigner = new StreamSigner(randomBytes(32));
const signing: SignaturePolicy = { mode: "stable", signer: streamSigner };

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function testRedis(): Promise<TestRedis> {
  const r = await createTestRedis("audit-pub");
  cleanups.push(() => r.close());
  return r;
}
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "audit-pub-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
function publisher(options: Partial<AuditPublisherOptions> & Pick<AuditPublisherOptions, "redis">): AuditPublisher {
  const p = new AuditPublisher({ signing, auditKey, ...options });
  cleanups.push(() => Promise.race([p.close(), new Promise((r) => setTimeout(r, 3000))]));
  return p;
}
function client(url: string): Redis {
  const c = connectRedis(url) as Redis;
  c.on("error", () => undefined); // refused connections are the point of several tests
  cleanups.push(async () => c.disconnect());
  return c;
}
async function entries(redis: Redis, keyPrefix: string): Promise<Fields[]> {
  const raw = await redis.xrange(streamKey(STREAM, keyPrefix), "-", "+");
  return raw.map(([, list]) => decodeFieldList(list) as Fields);
}
function events(n: number, zones: readonly string[]): AuditEvent[] {
  return Array.from({ length: n }, (_, i) => auditEvent(zones[i % zones.length] as string));
}
async function spare(): Promise<SpareRedis> {
  const s = await spareRedis();
  cleanups.push(() => s.kill());
  return s;
}

describe.skipIf(!hasRedis())("AuditPublisher", () => {
  it("flushes a partial batch after flushIntervalMs, as one pipeline", async () => {
    const r = await testRedis();
    const batches: number[] = [];
    let firstBatchAt = 0;
    const p = publisher({
      redis: r.client,
      keyPrefix: r.keyPrefix,
      flushIntervalMs: 80,
      metrics: { batchSent: (size) => { batches.push(size); firstBatchAt ||= performance.now(); } },
    });
    const startedAt = performance.now();
    for (const e of events(3, ["z1"])) await p.publish(e);
    expect(await r.client.xlen(streamKey(STREAM, r.keyPrefix))).toBe(0);
    await waitFor(async () => batches.length > 0 && (await r.client.xlen(streamKey(STREAM, r.keyPrefix))) === 3, 5000, "3 entries");
    expect(batches).toEqual([3]);
    expect(firstBatchAt - startedAt).toBeGreaterThanOrEqual(75);
  });

  it("sends a full batch at maxBatchSize without waiting for the timer", async () => {
    const r = await testRedis();
    const batches: number[] = [];
    const p = publisher({
      redis: r.client,
      keyPrefix: r.keyPrefix,
      flushIntervalMs: 60_000,
      maxBatchSize: 1000,
      metrics: { batchSent: (size) => batches.push(size) },
    });
    for (const e of events(2500, ["z1", "z2"])) await p.publish(e);
    const key = streamKey(STREAM, r.keyPrefix);
    await waitFor(async () => (await r.client.xlen(key)) === 2000, 5000, "2 full batches");
    await new Promise((res) => setTimeout(res, 200));
    expect(await r.client.xlen(key)).toBe(2000);
    expect(batches).toEqual([1000, 1000]);
    await p.flush();
    expect(await r.client.xlen(key)).toBe(2500);
    expect(batches).toEqual([1000, 1000, 500]);
  });

  it("writes frames that verify, with _sig, and correct producer chains per zone", async () => {
    const r = await testRedis();
    const p = publisher({ redis: r.client, keyPrefix: r.keyPrefix, maxBatchSize: 4 });
    const sent = events(15, ["zone-a", "zone-b", "zone-c"]);
    for (const e of sent) await p.publish(e);
    await p.flush();
    const got = await entries(r.client, r.keyPrefix);
    expect(got.map((f) => f.id)).toEqual(sent.map((e) => e.id));
    const lastSig = new Map<string, string>();
    const seqs = new Map<string, number>();
    for (const fields of got) {
      expect(streamSigner.verify(STREAM, fields)).toBe("valid");
      const { event } = verifyAuditFrame(fields, auditKey);
      expect(event.chain?.producer).toBe(p.producerId);
      const zone = event.zone_id;
      expect(event.chain?.seq).toBe((seqs.get(zone) ?? 0) + 1);
      expect(event.chain?.prev).toBe(lastSig.get(zone) ?? "");
      seqs.set(zone, event.chain!.seq);
      lastSig.set(zone, fields.sig as string);
    }
    expect([...seqs.values()]).toEqual([5, 5, 5]);
    // A tampered link no longer verifies: sig covers the chain inside data.
    const first = got[0] as Fields;
    const forged = { ...first, data: first.data!.replace('"seq":1', '"seq":2') };
    expect(() => verifyAuditFrame(forged, auditKey)).toThrow(/sig does not match/);
  });

  it("rejects invalid events and publishes after close", async () => {
    const r = await testRedis();
    const p = publisher({ redis: r.client, keyPrefix: r.keyPrefix, flushIntervalMs: 60_000 });
    await expect(p.publish({ ...auditEvent("z"), decision: "maybe" } as unknown as AuditEvent)).rejects.toMatchObject({ code: "SCHEMA_INVALID" });
    const sent = events(7, ["z"]);
    for (const e of sent) await p.publish(e);
    expect(await r.client.xlen(streamKey(STREAM, r.keyPrefix))).toBe(0);
    const closing = p.close();
    expect(p.close()).toBe(closing);
    await closing;
    expect(p.state).toBe("closed");
    expect((await entries(r.client, r.keyPrefix)).map((f) => f.id)).toEqual(sent.map((e) => e.id));
    await expect(p.publish(auditEvent("z"))).rejects.toBeInstanceOf(AuditPublisherClosedError);
  });

  it("blocks publish while the buffer is full, and loses nothing once Redis is back", async () => {
    const port = await freePort();
    const redis = client(`redis://127.0.0.1:${port}`);
    const p = publisher({ redis, maxBatchSize: 100, maxBufferedEvents: 200, flushIntervalMs: 10, publishTimeoutMs: 200 });
    const sent = events(260, ["z"]);
    for (const e of sent.slice(0, 200)) await p.publish(e);
    let admitted = 0;
    const blocked = sent.slice(200).map((e) => p.publish(e).then(() => admitted++));
    await new Promise((res) => setTimeout(res, 500));
    expect(admitted).toBe(0);
    expect(p.depth).toBe(200);
    // Redis comes up on that port: everything held and everything waiting gets through, in order.
    const server = await spareRedisOn(port);
    await Promise.all(blocked);
    await p.flush();
    const check = client(server.url);
    const ids = (await entries(check, "")).map((f) => f.id);
    expect(new Set(ids)).toEqual(new Set(sent.map((e) => e.id)));
    expect(ids.length).toBeLessThanOrEqual(sent.length + 200); // at-least-once: only timed-out batches may repeat
  });

  it("spills to fsynced replay files while Redis is down, then replays them in order once it is back", async () => {
    const server = await spare();
    const dir = await tempDir();
    const redis = client(server.url);
    const spilled: number[] = [];
    const replayed: number[] = [];
    const p = publisher({
      redis,
      replayDir: dir,
      flushIntervalMs: 10,
      publishTimeoutMs: 300,
      replayIntervalMs: 200,
      metrics: { spilled: (n) => spilled.push(n), replayed: (n) => replayed.push(n) },
    });
    const sent = events(45, ["z1", "z2"]);
    for (const e of sent.slice(0, 10)) await p.publish(e);
    await p.flush();
    await server.kill();
    for (const e of sent.slice(10, 30)) await p.publish(e);
    await p.flush();
    expect(p.degraded).toBe(true);
    const files = await listReplayFiles(dir);
    expect(files.length).toBeGreaterThan(0);
    const onDisk = (await Promise.all(files.map(readReplayFile))).flat();
    expect(onDisk.map((f) => f.id)).toEqual(sent.slice(10, 30).map((e) => e.id));
    for (const f of onDisk) verifyAuditFrame(f, auditKey);
    expect(spilled.reduce((a, b) => a + b, 0)).toBe(20);

    await server.start();
    for (const e of sent.slice(30)) await p.publish(e);
    await p.flush();
    await waitFor(async () => (await listReplayFiles(dir)).length === 0 && !p.degraded, 10_000, "replay dir drained");
    // Batches sent before the client reconnected were spilled too: everything spilled was replayed.
    const sum = (list: number[]) => list.reduce((a, b) => a + b, 0);
    expect(sum(spilled)).toBeGreaterThanOrEqual(20);
    expect(sum(replayed)).toBe(sum(spilled));
    const check = client(server.url);
    const got = await entries(check, "");
    // The server restarted empty, so the stream holds what was replayed and what followed, in publish order.
    const firstSeen = [...new Set(got.map((f) => f.id))];
    expect(firstSeen).toEqual(sent.slice(10).map((e) => e.id));
    for (const f of got) expect(streamSigner.verify(STREAM, f)).toBe("valid");
    expect((await readdir(dir)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  it("replays files left by an earlier process at start(), deleting them only once published", async () => {
    const dir = await tempDir();
    const port = await freePort();
    const down = publisher({ redis: client(`redis://127.0.0.1:${port}`), replayDir: dir, publishTimeoutMs: 200, maxBatchSize: 20 });
    const sent = events(50, ["z1", "z2"]);
    for (const e of sent) await down.publish(e);
    await down.close();
    expect((await Promise.all((await listReplayFiles(dir)).map(readReplayFile))).flat().map((f) => f.id)).toEqual(sent.map((e) => e.id));

    // Redis still down at the next start: start() says so and the files stay.
    const stillDown = publisher({ redis: client(`redis://127.0.0.1:${port}`), replayDir: dir, publishTimeoutMs: 200 });
    expect(await stillDown.start()).toBe(false);
    expect((await listReplayFiles(dir)).length).toBeGreaterThan(0);

    const r = await testRedis();
    const replayed: number[] = [];
    const next = publisher({ redis: r.client, keyPrefix: r.keyPrefix, replayDir: dir, metrics: { replayed: (n) => replayed.push(n) } });
    expect(await next.start()).toBe(true);
    expect(await listReplayFiles(dir)).toEqual([]);
    expect(replayed.reduce((a, b) => a + b, 0)).toBe(50);
    const got = await entries(r.client, r.keyPrefix);
    expect(got.map((f) => f.id)).toEqual(sent.map((e) => e.id));
    for (const f of got) {
      expect(streamSigner.verify(STREAM, f)).toBe("valid");
      expect(verifyAuditFrame(f, auditKey).event.chain?.producer).toBe(down.producerId);
    }
  });

  it("spills entries Redis refuses one by one (WRONGTYPE), and replays them once the cause is gone", async () => {
    const r = await testRedis();
    const dir = await tempDir();
    const key = streamKey(STREAM, r.keyPrefix);
    await r.client.set(key, "not a stream");
    const p = publisher({ redis: r.client, keyPrefix: r.keyPrefix, replayDir: dir, replayIntervalMs: 100 });
    const sent = events(12, ["z"]);
    for (const e of sent) await p.publish(e);
    await p.flush();
    const onDisk = (await Promise.all((await listReplayFiles(dir)).map(readReplayFile))).flat();
    expect(onDisk.map((f) => f.id)).toEqual(sent.map((e) => e.id));
    await r.client.del(key);
    await waitFor(async () => !p.degraded, 10_000, "replay after the key was fixed");
    expect((await entries(r.client, r.keyPrefix)).map((f) => f.id)).toEqual(sent.map((e) => e.id));
    expect(await listReplayFiles(dir)).toEqual([]);
  });

  it("keeps a batch it can neither publish nor write to disk, and writes it once the directory is usable", async () => {
    const base = await tempDir();
    const blocker = join(base, "not-a-dir");
    await writeFile(blocker, "");
    const dir = join(blocker, "replay");
    const p = publisher({ redis: client(`redis://127.0.0.1:${await freePort()}`), replayDir: dir, publishTimeoutMs: 100 });
    const sent = events(5, ["z"]);
    for (const e of sent) await p.publish(e);
    let flushed = false;
    const flushing = p.flush().then(() => (flushed = true));
    await new Promise((res) => setTimeout(res, 700));
    expect(flushed).toBe(false);
    expect(p.depth).toBe(5);
    await rm(blocker);
    await flushing;
    const onDisk = (await Promise.all((await listReplayFiles(join(base, "not-a-dir", "replay"))).map(readReplayFile))).flat();
    expect(onDisk.map((f) => f.id)).toEqual(sent.map((e) => e.id));
  });

  it("sets an unreadable replay file aside instead of deleting or replaying it", async () => {
    const r = await testRedis();
    const dir = await tempDir();
    const good = events(3, ["z"]).map((e) => encodeAuditFrame(e, auditKey));
    await writeReplayFile(dir, replayFileName(1, 1, 1), good);
    await writeFile(join(dir, replayFileName(1, 1, 2)), '{"id":"x","data":"{}"}\n{"id":\n');
    const p = publisher({ redis: r.client, keyPrefix: r.keyPrefix, replayDir: dir });
    expect(await p.start()).toBe(true);
    expect((await entries(r.client, r.keyPrefix)).map((f) => f.id)).toEqual(good.map((f) => f.id));
    expect((await readdir(dir)).sort()).toEqual([`${replayFileName(1, 1, 2)}.invalid`]);
  });
});

/** Starts a spare redis-server on a given (free) port. */
async function spareRedisOn(port: number): Promise<SpareRedis> {
  const s = await spareRedis(port);
  cleanups.push(() => s.kill());
  return s;
}
