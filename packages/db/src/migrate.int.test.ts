import { randomBytes } from "node:crypto";

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { migrateDatabase } from "./migrate-lib.js";

const adminUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const name = `caracal_migrate_${randomBytes(5).toString("hex")}`;
const url = (() => {
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
})();

async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

async function query<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql, values)).rows;
  } finally {
    await c.end();
  }
}

beforeAll(() => admin(`CREATE DATABASE ${name}`));
afterAll(() => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));

describe("pnpm db:migrate", () => {
  it("adopts an upstream event_outbox in place: rows kept, columns added, nothing dropped", async () => {
    // The upstream table, with a pending row and an upstream-only column.
    await query(`CREATE TABLE event_outbox (id text PRIMARY KEY, stream_name text NOT NULL, payload_json jsonb NOT NULL,
      attempts integer NOT NULL DEFAULT 0, available_at timestamptz NOT NULL DEFAULT now(), locked_until timestamptz,
      locked_by text, last_error text, dispatched_at timestamptz, request_id text, created_at timestamptz NOT NULL DEFAULT now(),
      upstream_only text)`);
    await query(`INSERT INTO event_outbox (id, stream_name, payload_json, upstream_only) VALUES ('up-1', 's', '{"a":"1"}', 'kept')`);

    // Two concurrent runs (two replicas starting at once) serialize and both succeed.
    await Promise.all([migrateDatabase(url), migrateDatabase(url)]);

    const rows = await query<{ id: string; upstream_only: string; attempts: number }>("SELECT id, upstream_only, attempts FROM event_outbox");
    expect(rows).toEqual([{ id: "up-1", upstream_only: "kept", attempts: 0 }]);
    const columns = (await query<{ column_name: string }>(
      "SELECT column_name FROM information_schema.columns WHERE table_name = 'event_outbox'",
    )).map((r) => r.column_name);
    expect(columns).toEqual(expect.arrayContaining(["tx_id", "seq", "failed_at", "upstream_only", "locked_until", "locked_by"]));
  });

  it("creates the audit ledger with its chain constraint and is idempotent", async () => {
    await migrateDatabase(url);
    const tables = (await query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")).map(
      (r) => r.table_name,
    );
    expect(tables).toEqual(expect.arrayContaining(["audit_events", "audit_events_dlq", "audit_tamper_alerts", "audit_export_watermark", "event_outbox"]));
    const unique = await query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE indexname = 'audit_events_zone_chain_seq_uq'");
    expect(unique[0]?.indexdef).toMatch(/UNIQUE.*\(zone_id, chain_seq\)/);
  });
});
