import { enqueue } from "@caracal/outbox";
import { DeadLetterWriter, Topics, signaturePolicy, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis, startS3 } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { generateKeyHex } from "./commands/keys.js";
import { ExitCode } from "./exit-codes.js";
import type { Io } from "./output.js";
import { runCli } from "./program.js";

const KEY = "ab".repeat(32);
const REVOKE_DLQ = Topics.sessionsRevoke.deadLetterStream as string;
const KEYS_DLQ = Topics.keysInvalidate.deadLetterStream as string;

interface Captured extends Io {
  stdout: string[];
  stderr: string[];
  answer: boolean;
}

function captureIo(options: { tty?: boolean; answer?: boolean } = {}): Captured {
  const io: Captured = {
    stdout: [],
    stderr: [],
    answer: options.answer ?? false,
    columns: 200,
    isTTY: options.tty ?? false,
    out: (t) => void io.stdout.push(t),
    err: (t) => void io.stderr.push(t),
    confirm: async () => io.answer,
  };
  return io;
}

describe.skipIf(!hasRedis() || !hasPostgres())("caracal-streams CLI against real Redis and PostgreSQL", () => {
  let redis: TestRedis;
  let db: TestDatabase;
  let env: Record<string, string>;
  const run = async (argv: string[], io = captureIo()) => ({ code: await runCli(argv, env, io, new AbortController().signal), io });

  beforeEach(async () => {
    redis = await createTestRedis("cli");
    db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    env = { REDIS_URL: redis.url, DATABASE_URL: db.url, CARACAL_KEY_PREFIX: redis.keyPrefix, CARACAL_MODE: "stable", STREAMS_HMAC_KEY: KEY };
  });
  afterEach(async () => {
    await redis.close();
    await db.drop();
  });

  it("streams: lag, pending, oldest pending and consumers as Redis reports them", async () => {
    const key = streamKey(Topics.sessionsRevoke.stream, redis.keyPrefix);
    await redis.client.xgroup("CREATE", key, "resource-revocation", "0", "MKSTREAM");
    for (let i = 0; i < 5; i++) await redis.client.xadd(key, "*", "zone_id", "z", "reason", "r", "session_id", `s${i}`);
    await redis.client.xreadgroup("GROUP", "resource-revocation", "replica-a", "COUNT", 2, "STREAMS", key, ">");
    const { code, io } = await run(["streams", "--json"]);
    expect(code).toBe(ExitCode.ok);
    const status = JSON.parse(io.stdout.join("\n")) as Array<{ stream: string; length: number; groups: Array<{ group: string; lag: number; pending: number; oldestPendingAgeSeconds: number; consumers: Array<{ name: string; pending: number }> }> }>;
    const revoke = status.find((s) => s.stream === Topics.sessionsRevoke.stream)!;
    expect(revoke.length).toBe(5);
    expect(revoke.groups).toHaveLength(1);
    expect(revoke.groups[0]).toMatchObject({ group: "resource-revocation", lag: 3, pending: 2 });
    expect(revoke.groups[0]!.oldestPendingAgeSeconds).toBeGreaterThanOrEqual(0);
    expect(revoke.groups[0]!.consumers).toEqual([expect.objectContaining({ name: "replica-a", pending: 2 })]);
    // the table form names the same figures
    const table = await run(["streams"]);
    expect(table.io.stdout.join("\n")).toMatch(/caracal\.sessions\.revoke.*resource-revocation.*3.*2/);
  });

  it("dlq list, show, replay (re-signed, traced, once) and purge (confirmation)", async () => {
    const signing = signaturePolicy({ mode: "stable", keyHex: KEY });
    const writer = new DeadLetterWriter({ redis: redis.client, signing, keyPrefix: redis.keyPrefix });
    const original = { zone_id: "z1", reason: "grant_revoked", session_id: "sess-1", _sig: "deadbeef" };
    const errors = await writer.write(REVOKE_DLQ, [
      { reason: "signature_invalid", srcStream: Topics.sessionsRevoke.stream, srcId: "1-1", group: "g", consumer: "c", deliveries: 1, error: "_sig does not match", fields: original },
      { reason: "schema_invalid", srcStream: Topics.sessionsRevoke.stream, srcId: "1-2", group: "g", consumer: "c", deliveries: 1, error: "no anchor", fields: { zone_id: "z1", reason: "x" } },
    ]);
    expect(errors.every((e) => e === undefined)).toBe(true);

    const list = await run(["dlq", "list", Topics.sessionsRevoke.stream, "--json"]);
    expect(list.code).toBe(0);
    const letters = (JSON.parse(list.io.stdout.join("\n")) as { letters: Array<{ id: string; reason: string; original: Record<string, string> }> }).letters;
    expect(letters.map((l) => l.reason)).toEqual(["signature_invalid", "schema_invalid"]);
    expect(letters[0]!.original).toMatchObject({ zone_id: "z1", session_id: "sess-1" });
    const filtered = await run(["dlq", "list", REVOKE_DLQ, "--reason", "schema_invalid", "--json"]);
    expect((JSON.parse(filtered.io.stdout.join("\n")) as { letters: unknown[] }).letters).toHaveLength(1);

    const show = await run(["dlq", "show", Topics.sessionsRevoke.stream, letters[0]!.id]);
    expect(show.io.stdout.join("\n")).toContain("session_id = sess-1");
    expect((await run(["dlq", "show", Topics.sessionsRevoke.stream, "9-9"])).code).toBe(ExitCode.problemFound);

    const replay = await run(["dlq", "replay", Topics.sessionsRevoke.stream, "--id", letters[0]!.id, "--json"]);
    expect(replay.code).toBe(0);
    const key = streamKey(Topics.sessionsRevoke.stream, redis.keyPrefix);
    const published = (await redis.client.xrange(key, "-", "+")) as Array<[string, string[]]>;
    expect(published).toHaveLength(1);
    const fields: Record<string, string> = {};
    const list0 = published[0]![1];
    for (let i = 0; i < list0.length; i += 2) fields[list0[i]!] = list0[i + 1]!;
    expect(fields).toMatchObject({ zone_id: "z1", session_id: "sess-1", replayed_from: `${REVOKE_DLQ}/${letters[0]!.id}` });
    // re-signed with this environment's key: the old, wrong _sig is gone and the new one verifies
    expect(fields._sig).not.toBe("deadbeef");
    expect(signing.signer!.verify(Topics.sessionsRevoke.stream, fields)).toBe("valid");

    // idempotent: the same letter is not published twice
    const again = await run(["dlq", "replay", Topics.sessionsRevoke.stream, "--id", letters[0]!.id]);
    expect(again.io.stdout.join("\n")).toMatch(/skipped .*already replayed as/);
    expect(await redis.client.xlen(key)).toBe(1);

    // purge: refused without a terminal or --yes, cancelled on "no", done with --yes
    const dead = streamKey(REVOKE_DLQ, redis.keyPrefix);
    expect((await run(["dlq", "purge", Topics.sessionsRevoke.stream, "--all"])).code).toBe(ExitCode.usage);
    expect((await run(["dlq", "purge", Topics.sessionsRevoke.stream, "--all"], captureIo({ tty: true, answer: false }))).code).toBe(ExitCode.cancelled);
    expect(await redis.client.xlen(dead)).toBe(2);
    expect((await run(["dlq", "purge", Topics.sessionsRevoke.stream, "--id", letters[1]!.id, "--yes"])).code).toBe(0);
    expect(await redis.client.xlen(dead)).toBe(1);
    expect((await run(["dlq", "purge", Topics.sessionsRevoke.stream, "--all"], captureIo({ tty: true, answer: true }))).code).toBe(0);
    expect(await redis.client.xlen(dead)).toBe(0);
  });

  it("dlq replay is rate-limited", async () => {
    const signing = signaturePolicy({ mode: "stable", keyHex: KEY });
    const writer = new DeadLetterWriter({ redis: redis.client, signing, keyPrefix: redis.keyPrefix });
    const letters = Array.from({ length: 6 }, (_, i) => ({
      reason: "max_deliveries_exceeded" as const,
      srcStream: Topics.keysInvalidate.stream,
      srcId: `1-${i}`,
      group: "g",
      consumer: "c",
      deliveries: 5,
      error: "",
      fields: { zone_id: `z${i}` },
    }));
    await writer.write(KEYS_DLQ, letters);
    const started = Date.now();
    const { code } = await run(["dlq", "replay", Topics.keysInvalidate.stream, "--rate", "10"]);
    expect(code).toBe(0);
    // 6 letters at 10/s: the last one is due 600 ms after the start
    expect(Date.now() - started).toBeGreaterThanOrEqual(550);
    expect(await redis.client.xlen(streamKey(Topics.keysInvalidate.stream, redis.keyPrefix))).toBe(6);
  });

  it("outbox status and requeue by id, stream and age", async () => {
    const ids: string[] = [];
    for (const zone of ["a", "b", "c"]) ids.push(await enqueue(db.pool, "keysInvalidate", { zone_id: zone }));
    await enqueue(db.pool, "sessionsRevoke", { zone_id: "z", reason: "r", session_id: "s" });
    await db.pool.query("UPDATE event_outbox SET failed_at = now() - interval '2 hours', attempts = 100, last_error = 'redis down' WHERE id = ANY($1)", [ids.slice(0, 2)]);
    await db.pool.query("UPDATE event_outbox SET failed_at = now(), attempts = 100, last_error = 'still down' WHERE id = $1", [ids[2]]);

    const status = await run(["outbox", "status", "--json"]);
    const rows = JSON.parse(status.io.stdout.join("\n")) as Array<{ stream: string; pending: number; failed: number; lastError: string }>;
    expect(rows.find((r) => r.stream === Topics.keysInvalidate.stream)).toMatchObject({ pending: 0, failed: 3, lastError: "still down" });
    expect(rows.find((r) => r.stream === Topics.sessionsRevoke.stream)).toMatchObject({ pending: 1, failed: 0 });

    expect((await run(["outbox", "requeue"])).code).toBe(ExitCode.usage);
    const byAge = await run(["outbox", "requeue", "--older-than", "1h", "--json"]);
    expect(JSON.parse(byAge.io.stdout.join("\n"))).toEqual({ requeued: 2, event_outbox: 2, caracal_outbox: 0 });
    const byId = await run(["outbox", "requeue", "--id", ids[2]!]);
    expect(byId.io.stdout.join("\n")).toContain("1 failed row(s) requeued");
    const { rows: left } = await db.pool.query("SELECT count(*)::int AS n FROM event_outbox WHERE failed_at IS NOT NULL");
    expect(left[0].n).toBe(0);
  });

  it("audit search and verify on an empty zone; usage and configuration errors have their exit codes", async () => {
    const search = await run(["audit", "search", "--zone", "nobody", "--json"]);
    expect(search.code).toBe(0);
    expect(JSON.parse(search.io.stdout.join("\n"))).toEqual({ events: [], nextCursor: null });
    const verify = await run(["audit", "verify", "--zone", "nobody"]);
    expect(verify.code).toBe(0);
    expect(verify.io.stdout.join("\n")).toContain("no rows");
    expect((await run(["audit", "search"])).code).toBe(ExitCode.usage);
    expect((await run(["audit", "search", "--zone", "z", "--from", "yesterday"])).code).toBe(ExitCode.usage);
    env.STREAMS_HMAC_KEY = "abc";
    const bad = await run(["dlq", "replay", Topics.keysInvalidate.stream]);
    expect(bad.code).toBe(ExitCode.config);
    expect(bad.io.stderr.join("\n")).not.toContain("abc");
  });

  it("audit export --hour re-exports one hour: the missing object first, then a copy beside it, never over it", async () => {
    await db.pool.query(
      `INSERT INTO audit_events (id, zone_id, event_type, decision, evaluation_status, request_id, payload_json, determining_policies_json, diagnostics_json, hmac_chain, occurred_at, chain_seq, content_sha256)
       SELECT 'e' || g, 'z', 't', 'allow', 'complete', 'r', '{}', '[]', '[]', 'h' || g, '2026-05-21T12:00:00Z'::timestamptz + g * interval '1 minute', g, 'c' || g FROM generate_series(0, 59) g`,
    );
    expect((await run(["audit", "export", "--hour", "2026-05-21T12"])).code).toBe(ExitCode.usage); // export not configured
    expect((await run(["audit", "export", "--hour", "noon"])).code).toBe(ExitCode.usage);
    const s3 = await startS3();
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
    try {
      Object.assign(env, { AUDIT_EXPORT_S3_ENDPOINT: s3.endpoint, AUDIT_EXPORT_S3_BUCKET: s3.bucket, AUDIT_EXPORT_S3_REGION: s3.region });
      const first = await run(["audit", "export", "--hour", "2026-05-21T12:34:56Z", "--json"]);
      expect(first.code, first.io.stderr.join("\n")).toBe(0);
      expect(JSON.parse(first.io.stdout.join(""))).toEqual({ hour: "2026-05-21T12:00:00.000Z", key: "audit/2026/05/21/2026-05-21T12.parquet", rows: 60 });
      const again = await run(["audit", "export", "--hour", "2026-05-21T12", "--json"]);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.io.stdout.join(""))).toMatchObject({ key: expect.stringMatching(/^audit\/2026\/05\/21\/2026-05-21T12\.reexport-\d+\.parquet$/), rows: 60 });
      const empty = await run(["audit", "export", "--hour", "2026-05-21T13"]);
      expect(empty.code).toBe(0);
      expect(empty.io.stdout.join("")).toContain("nothing exported");
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
      await s3.stop();
    }
  });

  it("revocations list and check: the durable record and upstream's Redis keys, disagreement shown, exit 1 when revoked", async () => {
    // the revocation consumer's table (its migration creates it; created here if this checkout lacks it)
    await db.pool.query(`CREATE TABLE IF NOT EXISTS session_revocations (
      id bigserial PRIMARY KEY, zone_id text NOT NULL, anchor_kind text NOT NULL, anchor_id text NOT NULL, reason text NOT NULL, grant_id text,
      revoked_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL, source_stream_id text NOT NULL)`);
    await db.pool.query(
      `INSERT INTO session_revocations (zone_id, anchor_kind, anchor_id, reason, grant_id, expires_at, source_stream_id) VALUES
       ('z1', 'session_id', 's-1', 'grant_revoked', 'g1', now() + interval '1 day', '1-1'),
       ('z1', 'delegation_edge_id', 'e-1', 'delegation_revoked', NULL, now() + interval '1 day', '1-2'),
       ('z1', 'session_id', 's-old', 'grant_revoked', NULL, now() - interval '1 minute', '1-0')`,
    );
    await redis.client.set(`${redis.keyPrefix}caracal:revoked:sessions:s-1`, "1", "PX", 3_600_000);
    const list = await run(["revocations", "list", "--json"]);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.io.stdout.join("")) as Array<{ anchorId: string }>).map((r) => r.anchorId).sort()).toEqual(["e-1", "s-1"]);
    const all = await run(["revocations", "list", "--all", "--zone", "z1", "--json"]);
    expect(JSON.parse(all.io.stdout.join(""))).toHaveLength(3);

    const revoked = await run(["revocations", "check", "--zone", "z1", "--session-id", "s-1", "--edge-id", "e-1", "--sid", "nope", "--json"]);
    expect(revoked.code).toBe(ExitCode.problemFound);
    const answer = JSON.parse(revoked.io.stdout.join(""));
    expect(answer.revoked).toBe(true);
    expect(answer.anchors.map((a: { anchor: string; revoked: boolean; redisKey: boolean; agree: boolean }) => [a.anchor, a.revoked, a.redisKey, a.agree])).toEqual([
      ["session_id", true, true, true],
      ["sid", false, false, true],
      ["edge_id", true, false, false], // the key is missing (a flush): shown as a disagreement
    ]);
    const active = await run(["revocations", "check", "--zone", "z2", "--session-id", "s-1"]);
    expect(active.code).toBe(0);
    expect(active.io.stdout.join("\n")).toContain("active");
    expect((await run(["revocations", "check", "--zone", "z1"])).code).toBe(ExitCode.usage);
  });

  it("policy status: the active version per zone and the revision each replica serves, exit 1 when replicas disagree", async () => {
    // upstream's policy tables (migration 0015), seeded as upstream's API leaves them
    for (const z of ["z1", "z2", "z3"]) await db.pool.query("INSERT INTO zones (id, name, slug) VALUES ($1, $1, $1)", [z]);
    for (const [ps, z] of [["ps-1", "z1"], ["ps-2", "z2"], ["ps-3", "z3"]]) {
      await db.pool.query("INSERT INTO policy_sets (id, zone_id, name, created_by) VALUES ($1, $2, $1, 'test')", [ps, z]);
    }
    await db.pool.query(
      `INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, schema_version, created_by)
       VALUES ('psv-1', 'ps-1', 3, '[]', 'abc', '1', 'test'), ('psv-2', 'ps-2', 1, '[]', 'def', '1', 'test')`,
    );
    await db.pool.query(`INSERT INTO policy_set_bindings (zone_id, policy_set_id, active_version_id) VALUES ('z1', 'ps-1', 'psv-1'), ('z2', 'ps-2', 'psv-2'), ('z3', 'ps-3', NULL)`);
    const { createServer } = await import("node:http");
    const replica = (revisions: Record<string, string>) =>
      new Promise<{ url: string; close: () => void }>((resolve) => {
        const server = createServer((_req, res) => {
          res.end(Object.entries(revisions).map(([zone, revision]) => `caracal_policy_bundle_revision_info{zone="${zone}",revision="${revision}"} 1`).join("\n") + "\n");
        });
        server.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, close: () => server.close() }));
      });
    const a = await replica({ z1: "rev-a", z2: "rev-b" });
    const b = await replica({ z1: "rev-a", z2: "rev-old" });
    try {
      const agreeing = await run(["policy", "status", "--zone", "z1", "--replica", a.url, "--replica", b.url, "--json"]);
      expect(agreeing.code).toBe(0);
      expect(JSON.parse(agreeing.io.stdout.join(""))).toMatchObject({ zones: [{ zone: "z1", activeVersionId: "psv-1", version: 3, agree: true }], problems: [] });
      env.POLICY_INVALIDATOR_URLS = `${a.url},${b.url}`;
      const split = await run(["policy", "status"]);
      expect(split.code).toBe(ExitCode.problemFound);
      expect(split.io.stderr.join("\n")).toContain("zone z2");
      expect(split.io.stdout.join("\n")).toContain("NO");
    } finally {
      a.close();
      b.close();
    }
  });

  it("reports an unreachable Redis with exit 4", async () => {
    env.REDIS_URL = "redis://127.0.0.1:1";
    const { code, io } = await run(["streams"]);
    expect(code).toBe(ExitCode.unavailable);
    expect(io.stderr.join("\n")).toMatch(/unavailable/);
  }, 60_000);
});

describe("keys generate", () => {
  it("prints a key the services accept, of the asked length", () => {
    expect(generateKeyHex(32)).toMatch(/^[0-9a-f]{64}$/);
    expect(generateKeyHex(48)).toHaveLength(96);
    expect(() => generateKeyHex(16)).toThrow(/--bytes/);
  });
});
