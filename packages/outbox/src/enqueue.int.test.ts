import { createDatabase } from "@caracal/db";
import { createMigratedDatabase, hasPostgres } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { enqueue } from "./enqueue.js";
import { OutboxFieldsInvalidError } from "./errors.js";
import { OUTBOX_CHANNEL } from "./fields.js";
import { requeue } from "./requeue.js";

describe.skipIf(!hasPostgres())("enqueue / requeue", () => {
  let db: TestDatabase;
  let listener: pg.Client;
  let notifications: number;

  beforeEach(async () => {
    db = await createMigratedDatabase();
    // drop() terminates connections (WITH FORCE); an idle pooled one reports it here.
    db.pool.on("error", () => undefined);
    listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    notifications = 0;
    listener.on("notification", (n) => {
      if (n.channel === OUTBOX_CHANNEL) notifications++;
    });
    await listener.query(`LISTEN ${OUTBOX_CHANNEL}`);
  });
  afterEach(async () => {
    await listener.end();
    await db.drop();
  });

  const settle = () => new Promise((r) => setTimeout(r, 150));

  it("writes the row inside the caller's transaction and notifies only at commit", async () => {
    const client = await db.pool.connect();
    try {
      await client.query("BEGIN");
      const id = await enqueue(client, "sessionsRevoke", { zone_id: "z", reason: "grant_revoked", session_id: "s", grant_id: "g" }, { requestId: "req-1" });
      await enqueue(client, "keysInvalidate", { zone_id: "z", key_id: "k" });
      await settle();
      expect(notifications).toBe(0);
      expect((await db.pool.query("SELECT 1 FROM event_outbox")).rowCount).toBe(0);
      await client.query("COMMIT");
      await settle();
      // One notification per transaction: PostgreSQL folds identical ones.
      expect(notifications).toBe(1);
      const { rows } = await db.pool.query("SELECT * FROM event_outbox WHERE id = $1", [id]);
      expect(rows[0]).toMatchObject({
        stream_name: "caracal.sessions.revoke",
        payload_json: { zone_id: "z", reason: "grant_revoked", session_id: "s", grant_id: "g" },
        request_id: "req-1",
        attempts: 0,
        dispatched_at: null,
        failed_at: null,
      });
      expect(rows[0].tx_id).toMatch(/^\d+$/);
    } finally {
      client.release();
    }
  });

  it("leaves nothing and notifies nobody on rollback", async () => {
    const client = await db.pool.connect();
    try {
      await client.query("BEGIN");
      await enqueue(client, "keysInvalidate", { zone_id: "z" });
      await client.query("ROLLBACK");
    } finally {
      client.release();
    }
    await settle();
    expect(notifications).toBe(0);
    expect((await db.pool.query("SELECT 1 FROM event_outbox")).rowCount).toBe(0);
  });

  it("works inside a drizzle transaction", async () => {
    const orm = createDatabase(db.pool);
    const id = await orm.transaction(async (tx) => enqueue(tx, "policyInvalidate", { zone_id: "z", policy_set_id: "p", shadow_version_id: "" }));
    const { rows } = await db.pool.query("SELECT payload_json FROM event_outbox WHERE id = $1", [id]);
    expect(rows[0].payload_json).toEqual({ zone_id: "z", policy_set_id: "p", shadow_version_id: "" });
    await expect(
      orm.transaction(async (tx) => {
        await enqueue(tx, "policyInvalidate", { zone_id: "z", policy_set_id: "rolled-back" });
        throw new Error("business rule failed");
      }),
    ).rejects.toThrow("business rule failed");
    expect((await db.pool.query("SELECT 1 FROM event_outbox")).rowCount).toBe(1);
  });

  it("rejects fields that do not fit the topic's schema before writing, leaving the transaction usable", async () => {
    const client = await db.pool.connect();
    try {
      await client.query("BEGIN");
      const attempt = (fn: () => Promise<unknown>) => fn().then(() => undefined, (e: unknown) => e);
      const noAnchor = await attempt(() => enqueue(client, "sessionsRevoke", { zone_id: "z", reason: "r" }));
      expect(noAnchor).toBeInstanceOf(OutboxFieldsInvalidError);
      expect((noAnchor as OutboxFieldsInvalidError).code).toBe("OUTBOX_FIELDS_INVALID");
      expect(String(noAnchor)).toMatch(/sessionsRevoke.*at least one revocation anchor/);
      // @ts-expect-error zone_id is required by the topic's type
      expect(await attempt(() => enqueue(client, "keysInvalidate", { key_id: "k" }))).toBeInstanceOf(OutboxFieldsInvalidError);
      expect(String(await attempt(() => enqueue(client, "agentsLifecycle", { event: "explode" as "spawn", zone_id: "z", agent_session_id: "a" })))).toMatch(/event/);
      expect(String(await attempt(() => enqueue(client, "keysInvalidate", { zone_id: "z", _sig: "x" })))).toMatch(/_sig: set by the dispatcher/);
      expect(String(await attempt(() => enqueue(client, "keysInvalidate", { zone_id: "z", _sig2: "x" })))).toMatch(/_sig2: set by the dispatcher/);
      expect(String(await attempt(() => enqueue(client, "keysInvalidate", { zone_id: "z", outbox_id: "x" })))).toMatch(/outbox_id/);
      expect(String(await attempt(() => enqueue(client, "keysInvalidate", { zone_id: "a\u0000b" })))).toMatch(/NUL/);
      expect(String(await attempt(() => enqueue(client, "nope" as "keysInvalidate", { zone_id: "z" })))).toMatch(/not a registry topic/);
      // Nothing was sent to PostgreSQL, so the transaction goes on.
      await enqueue(client, "keysInvalidate", { zone_id: "z" });
      await client.query("COMMIT");
    } finally {
      client.release();
    }
    expect((await db.pool.query("SELECT 1 FROM event_outbox")).rowCount).toBe(1);
  });

  it("requeues failed rows only, resetting attempts, and notifies", async () => {
    await db.pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json, attempts, failed_at, last_error, dispatched_at) VALUES
      ('failed-1', 'caracal.keys.invalidate', '{"zone_id":"z"}', 100, now(), 'redis_error: boom', NULL),
      ('failed-2', 'caracal.policy.invalidate', '{"zone_id":"z"}', 1, now(), 'schema_invalid: x', NULL),
      ('pending', 'caracal.keys.invalidate', '{"zone_id":"z"}', 2, NULL, NULL, NULL),
      ('done', 'caracal.keys.invalidate', '{"zone_id":"z"}', 1, NULL, NULL, now())`);
    expect(await requeue(db.pool, { stream: "caracal.keys.invalidate" })).toBe(1);
    const { rows } = await db.pool.query("SELECT id, attempts, failed_at FROM event_outbox ORDER BY id");
    expect(rows).toEqual([
      { id: "done", attempts: 1, failed_at: null },
      { id: "failed-1", attempts: 0, failed_at: null },
      { id: "failed-2", attempts: 1, failed_at: expect.any(Date) },
      { id: "pending", attempts: 2, failed_at: null },
    ]);
    expect(await requeue(db.pool, { ids: ["failed-2", "pending"] })).toBe(1);
    expect(await requeue(db.pool, { allFailed: true })).toBe(0);
    await settle();
    expect(notifications).toBeGreaterThanOrEqual(1);
  });
});
