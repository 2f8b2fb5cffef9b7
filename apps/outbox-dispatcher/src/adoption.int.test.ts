import { migrateDatabase } from "@caracal/db";
import { requeue } from "@caracal/outbox";
import { Topics } from "@caracal/streams-core";
import { createEmptyDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { readStream, signer, startDispatcher, waitFor } from "./test-support/harness.js";
import type { RunningDispatcher } from "./test-support/harness.js";

/** The upstream table as the upstream services create it. */
const UPSTREAM_DDL = `CREATE TABLE event_outbox (
  id text PRIMARY KEY,
  stream_name text NOT NULL,
  payload_json jsonb NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  available_at timestamptz NOT NULL DEFAULT now(),
  locked_until timestamptz,
  locked_by text,
  last_error text,
  dispatched_at timestamptz,
  request_id text,
  created_at timestamptz NOT NULL DEFAULT now()
)`;

describe.skipIf(!hasRedis() || !hasPostgres())("adopting an upstream event_outbox", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  let dispatcher: RunningDispatcher | undefined;

  beforeEach(async () => {
    db = await createEmptyDatabase();
    db.pool.on("error", () => undefined);
    redis = await createTestRedis("adopt");
  });
  afterEach(async () => {
    await dispatcher?.stop();
    await redis.close();
    await db.drop();
  });

  it("migrates in place (nothing dropped or rewritten) and drains the pending upstream rows in order", async () => {
    await db.pool.query(UPSTREAM_DDL);
    const stream = Topics.sessionsRevoke.stream;
    await db.pool.query(
      `INSERT INTO event_outbox (id, stream_name, payload_json, attempts, locked_until, locked_by, last_error, dispatched_at, request_id, created_at) VALUES
       ('up-done', $1, '{"zone_id":"z","reason":"r","session_id":"s0"}', 1, NULL, NULL, NULL, now() - interval '1 hour', 'rq0', now() - interval '2 hours'),
       ('up-1', $1, '{"zone_id":"z","reason":"r","session_id":"s1"}', 0, NULL, NULL, NULL, NULL, 'rq1', now() - interval '30 minutes'),
       ('up-2', $1, '{"zone_id":"z","reason":"r","session_id":"s2"}', 3, now() - interval '5 minutes', 'go-dispatcher-1', 'dial tcp: refused', NULL, NULL, now() - interval '20 minutes'),
       ('up-3', $1, '{"zone_id":"z","reason":"r","session_id":"s3","grant_id":null}', 0, NULL, NULL, NULL, NULL, NULL, now() - interval '10 minutes')`,
      [stream],
    );
    const before = await db.pool.query("SELECT id, payload_json, attempts, last_error, request_id, created_at FROM event_outbox ORDER BY id");
    const filenode = async () => (await db.pool.query("SELECT pg_relation_filenode('event_outbox') AS f")).rows[0].f;
    const fileBefore = await filenode();

    await migrateDatabase(db.url);
    await migrateDatabase(db.url); // idempotent

    const after = await db.pool.query("SELECT id, payload_json, attempts, last_error, request_id, created_at FROM event_outbox ORDER BY id");
    expect(after.rows).toEqual(before.rows);
    // Same relation file: the table was not rewritten; old rows keep NULL in the new columns.
    expect(await filenode()).toBe(fileBefore);
    const added = await db.pool.query("SELECT count(*)::int AS n FROM event_outbox WHERE tx_id IS NULL AND seq IS NULL");
    expect(added.rows[0].n).toBe(4);

    // An upstream producer keeps inserting with its own column list: the new columns fill in.
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json) VALUES ('up-4', $1, '{"zone_id":"z","reason":"r","session_id":"s4"}')`, [stream]);
    expect((await db.pool.query("SELECT tx_id IS NOT NULL AND seq IS NOT NULL AS filled FROM event_outbox WHERE id = 'up-4'")).rows[0].filled).toBe(true);

    dispatcher = startDispatcher(db.pool, redis.url, redis.keyPrefix);
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NULL")).rowCount === 0);
    const entries = await readStream(redis.client, stream, redis.keyPrefix);
    // Pre-adoption rows first, by created_at; the already-dispatched row is not sent again.
    expect(entries.map((e) => e.fields.outbox_id)).toEqual(["up-1", "up-2", "up-3", "up-4"]);
    expect(entries.every((e) => signer.verify(stream, e.fields) === "valid")).toBe(true);
    expect(entries[2]?.fields).not.toHaveProperty("grant_id");
  });

  it("rows upstream's dispatcher abandoned (available_at = infinity) are failed, do not hold back their stream, and can be requeued", async () => {
    await db.pool.query(UPSTREAM_DDL);
    const stream = Topics.keysInvalidate.stream;
    const values = (from: number, to: number, abandoned: boolean) =>
      Array.from({ length: to - from }, (_, k) => {
        const i = from + k;
        return abandoned
          ? `('old-${String(i).padStart(2, "0")}', '${stream}', '{"zone_id":"z${i}"}', 100, 'infinity', 'dial tcp: refused', now() - interval '${60 - i} minutes')`
          : `('new-${String(i).padStart(2, "0")}', '${stream}', '{"zone_id":"z${i}"}', 0, now(), NULL, now() - interval '${60 - i} minutes')`;
      }).join(",");
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json, attempts, available_at, last_error, created_at) VALUES ${values(0, 12, true)}, ${values(12, 24, false)}`);

    await migrateDatabase(db.url);
    const failed = await db.pool.query("SELECT id, last_error, available_at = 'infinity'::timestamptz AS still_infinity FROM event_outbox WHERE failed_at IS NOT NULL ORDER BY id");
    expect(failed.rows.map((r) => r.id)).toEqual(Array.from({ length: 12 }, (_, i) => `old-${String(i).padStart(2, "0")}`));
    // upstream's own view (available_at = infinity means dead) is left as it was, and the error is kept
    expect(failed.rows.every((r) => r.still_infinity && r.last_error === "dial tcp: refused")).toBe(true);

    dispatcher = startDispatcher(db.pool, redis.url, redis.keyPrefix);
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE dispatched_at IS NULL AND failed_at IS NULL")).rowCount === 0);
    let entries = await readStream(redis.client, stream, redis.keyPrefix);
    expect(entries.map((e) => e.fields.outbox_id)).toEqual(Array.from({ length: 12 }, (_, i) => `new-${12 + i}`));

    // An upstream dispatcher still running abandons one more row: the trigger fails it at once.
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json) VALUES ('late', $1, '{"zone_id":"late"}')`, [Topics.agentsLifecycle.stream]);
    await db.pool.query("UPDATE event_outbox SET available_at = 'infinity', last_error = 'gave up' WHERE id = 'late' AND dispatched_at IS NULL");
    const late = (await db.pool.query("SELECT failed_at IS NOT NULL AS failed, dispatched_at IS NOT NULL AS dispatched FROM event_outbox WHERE id = 'late'")).rows[0];
    expect(late.failed || late.dispatched).toBe(true);

    // Requeued, the abandoned rows are dispatched (in their order).
    await requeue(db.pool, { stream });
    await waitFor(async () => (await db.pool.query("SELECT 1 FROM event_outbox WHERE stream_name = $1 AND dispatched_at IS NULL", [stream])).rowCount === 0);
    entries = await readStream(redis.client, stream, redis.keyPrefix);
    expect(entries.slice(12).map((e) => e.fields.outbox_id)).toEqual(Array.from({ length: 12 }, (_, i) => `old-${String(i).padStart(2, "0")}`));
  });
});
