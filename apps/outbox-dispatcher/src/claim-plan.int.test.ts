import { createMigratedDatabase, hasPostgres } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";


/**
 * The claim must read the head of the pending index in order, whatever the statistics: with none (a burst
 * into a fresh table, autovacuum not run yet) PostgreSQL used to pick a bitmap scan of every pending row
 * plus a sort, so each claim read the whole backlog: 31 ms instead of 0.4 ms here with 20,000 rows
 * (migration 0005; this test fails against 0004's function). The plans of the statements inside
 * `outbox_exchange` are read with auto_explain (nested statements, sent to this session as notices).
 */
describe.skipIf(!hasPostgres())("outbox_exchange claim plan", () => {
  let db: TestDatabase;

  beforeEach(async () => {
    db = await createMigratedDatabase();
  });
  afterEach(async () => {
    await db.drop();
  });

  it("reads the pending index in order on a table with no statistics, not the whole backlog", async () => {
    const client = await db.pool.connect();
    const plans: string[] = [];
    client.on("notice", (notice) => plans.push(notice.message ?? ""));
    try {
      await db.pool.query(
        `INSERT INTO event_outbox (id, stream_name, payload_json)
         SELECT 'r-' || lpad(g::text, 6, '0'), 'caracal.sessions.revoke',
                jsonb_build_object('zone_id', '5f0c6a52-8c1e-4c53-9d0e-2f7a4b1c9e10', 'reason', 'session_revoked_by_admin', 'session_id', gen_random_uuid(),
                  'agent_session_id', gen_random_uuid(), 'root_sid', gen_random_uuid(), 'grant_id', gen_random_uuid(), 'occurred_at', now())
         FROM generate_series(1, 20000) g`,
      );
      // Never analyzed (autovacuum has not come by since the burst).
      const { rows: stats } = await client.query("SELECT reltuples FROM pg_class WHERE relname = 'event_outbox'");
      expect(stats[0].reltuples).toBe(-1);
      await client.query("LOAD 'auto_explain'");
      await client.query(
        "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_analyze = on; SET auto_explain.log_level = notice; SET client_min_messages = notice",
      );
      const { rows } = await client.query("SELECT * FROM outbox_exchange('plan-test', 32, 30000, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')");
      expect(rows.filter((r: { id: string | null }) => r.id !== null)).toHaveLength(32);
      const scan = plans.find((p) => p.includes("bool_or(h.blocking)"));
      expect(scan, "the claim scan's plan").toBeDefined();
      expect(scan).toMatch(/Index Scan using event_outbox_pending_idx on event_outbox o .*rows=64 /);
      expect(scan).not.toMatch(/Bitmap|Seq Scan/);
    } finally {
      await client.query("RESET ALL").catch(() => undefined);
      client.release(true);
    }
  });
});
