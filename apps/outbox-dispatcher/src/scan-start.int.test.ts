import { requeue } from "@caracal/outbox";
import { createMigratedDatabase, hasPostgres } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import type pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { ExchangeRow, RowOutcome } from "./sql.js";
import { EXCHANGE_SQL, EXCHANGE_TYPES, exchangeParams } from "./sql.js";

/**
 * Where `outbox_exchange` starts its claim scan (migration 0006): after the previous claim of the same
 * session, not at the head of the pending index, where every row dispatched since the last VACUUM left an
 * entry; and back at the head after a requeue, whose rows keep their old place keys.
 */
describe.skipIf(!hasPostgres())("outbox_exchange scan start", () => {
  let db: TestDatabase;

  beforeEach(async () => {
    db = await createMigratedDatabase();
  });
  afterEach(async () => {
    await db.drop();
  });

  /** One exchange on `client`: marks `marks` dispatched, claims up to `limit`; returns the claimed ids. */
  async function exchange(client: pg.PoolClient, marks: readonly string[], limit = 32): Promise<string[]> {
    const outcomes = marks.map((id): RowOutcome => ({ kind: "dispatched", id, entryId: "1-1" }));
    const { rows } = await client.query<ExchangeRow>({ text: EXCHANGE_SQL, values: exchangeParams(outcomes, limit, 30_000, "scan-test"), types: EXCHANGE_TYPES });
    return rows.flatMap((r) => (r.id === null ? [] : [r.id]));
  }

  async function insertRows(prefix: string, count: number, stream = "caracal.sessions.revoke"): Promise<void> {
    await db.pool.query(
      `INSERT INTO event_outbox (id, stream_name, payload_json)
       SELECT $1 || lpad(g::text, 6, '0'), $2,
              jsonb_build_object('zone_id', '5f0c6a52-8c1e-4c53-9d0e-2f7a4b1c9e10', 'reason', 'r', 'session_id', gen_random_uuid(),
                'agent_session_id', gen_random_uuid(), 'root_sid', gen_random_uuid(), 'grant_id', gen_random_uuid(), 'occurred_at', now())
       FROM generate_series(1, $3::int) g`,
      [prefix, stream, count],
    );
  }

  it("does not step over the entries of rows already dispatched", async () => {
    await insertRows("r-", 12_000);
    const client = await db.pool.connect();
    const plans: string[] = [];
    client.on("notice", (notice) => plans.push(notice.message ?? ""));
    try {
      let marks: string[] = [];
      for (let i = 0; i < 300; i++) marks = await exchange(client, marks);
      // 9,568 rows dispatched: their entries (about 50 index pages) are still in the pending index.
      const { rows: dead } = await client.query("SELECT count(*)::int AS n FROM event_outbox WHERE dispatched_at IS NOT NULL");
      expect(dead[0].n).toBe(299 * 32);
      await client.query("LOAD 'auto_explain'");
      await client.query(
        "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; SET auto_explain.log_level = notice; SET client_min_messages = notice",
      );
      expect(await exchange(client, marks)).toHaveLength(32);
      const scan = plans.find((p) => p.includes("bool_or(h.blocking)"));
      expect(scan, "the claim scan's plan").toBeDefined();
      expect(scan).toMatch(/Index Cond: \(ROW\(COALESCE\(tx_id/);
      const buffers = Number(/Buffers: shared hit=(\d+)/.exec(scan ?? "")?.[1]);
      // From the head of the index this read 60 or more pages.
      expect(buffers).toBeLessThan(30);
    } finally {
      await client.query("RESET ALL").catch(() => undefined);
      client.release(true);
    }
  });

  it("reads from the head of the index again within a second: a row put back by hand is claimed", async () => {
    await insertRows("a-", 1, "caracal.keys.invalidate");
    await insertRows("b-", 100);
    await db.pool.query("UPDATE event_outbox SET failed_at = now(), attempts = 100 WHERE id = 'a-000001'");
    const client = await db.pool.connect();
    try {
      // A malformed setting is ignored, never an error.
      await client.query("SELECT set_config('caracal.outbox_scan_from', 'garbage', false)");
      let marks = await exchange(client, [], 32);
      expect(marks).toHaveLength(32);
      // Put back by hand, without requeue: below this session's scan start, so not seen at once...
      await db.pool.query("UPDATE event_outbox SET failed_at = NULL, attempts = 0 WHERE id = 'a-000001'");
      const claimed: string[] = [];
      const started = Date.now();
      while (!claimed.includes("a-000001") && Date.now() - started < 3_000) {
        marks = await exchange(client, marks, 4);
        claimed.push(...marks);
        await new Promise((r) => setTimeout(r, 50));
      }
      // ...but every claim derives its start from the previous one, and the chain is trusted for one
      // second from its last read from the head: then the row is claimed.
      expect(claimed).toContain("a-000001");
      expect(claimed.indexOf("a-000001")).toBeGreaterThan(0);
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      client.release(true);
    }
  });

  it("goes back to the head of the index after a requeue: a requeued row leaves before later rows of its stream", async () => {
    await insertRows("a-", 1, "caracal.keys.invalidate"); // will fail, then be requeued
    await insertRows("b-", 64);
    await insertRows("c-", 2, "caracal.keys.invalidate"); // later rows of the failed row's stream
    await db.pool.query("UPDATE event_outbox SET failed_at = now(), attempts = 100 WHERE id = 'a-000001'");
    const client = await db.pool.connect();
    try {
      const first = await exchange(client, [], 32);
      expect(first).toHaveLength(32);
      const second = await exchange(client, first, 32);
      expect(second[0]).toBe("b-000033");
      // This session's scan now starts past a-000001; the requeue must send it back to the head.
      expect(await requeue(db.pool, { ids: ["a-000001"] })).toBe(1);
      const third = await exchange(client, second, 32);
      expect(third).toEqual(["a-000001", "c-000001", "c-000002"]);
    } finally {
      client.release(true);
    }
  });
});
