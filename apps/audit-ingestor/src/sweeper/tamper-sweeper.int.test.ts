import { createMigratedDatabase, hasPostgres } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";


import { LedgerWriter } from "../ledger/writer.js";
import { chainLink } from "../ledger/content.js";
import { ledgerInput, makeChain, makeEvent, TEST_AUDIT_KEY } from "../test-support/events.js";
import { runVerifyCommand } from "../verify/verify-command.js";
import { sweepOnce } from "./tamper-sweeper.js";

const KEY_HEX = TEST_AUDIT_KEY.toString("hex");
const recent = () => new Date(Date.now() - 60_000).toISOString();

describe.skipIf(!hasPostgres())("tamper sweeper and verify", () => {
  let db: TestDatabase;
  let writer: LedgerWriter;
  beforeEach(async () => {
    db = await createMigratedDatabase();
    writer = new LedgerWriter({ pool: db.pool, auditKey: TEST_AUDIT_KEY });
  });
  afterEach(async () => {
    await db.drop();
  });

  const sweep = () => sweepOnce({ pool: db.pool, auditKey: TEST_AUDIT_KEY, rollingHours: 4, gapGraceMs: 0, intervalMs: 1000 });

  async function verify(zone: string, extra: string[] = []) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runVerifyCommand(["--zone", zone, ...extra], { DATABASE_URL: db.url, AUDIT_HMAC_KEY: KEY_HEX, AUDIT_GAP_GRACE_MS: "0" }, { out: (l) => out.push(l), err: (l) => err.push(l) });
    return { code, out, err };
  }

  async function seed(zone: string, n: number) {
    const events = Array.from({ length: n }, () => makeEvent({ zone_id: zone, occurred_at: recent() }));
    await writer.writeBatch(events.map((e) => ledgerInput(e)));
    return events;
  }

  async function tampered(zone: string) {
    const r = await db.pool.query<{ chain_seq: string }>("SELECT chain_seq FROM audit_events WHERE zone_id = $1 AND tamper_detected ORDER BY chain_seq", [zone]);
    return r.rows.map((x) => Number(x.chain_seq));
  }

  it("finds nothing on an intact ledger (exit 0)", async () => {
    await seed("z", 20);
    const s = await sweep();
    expect(s.ran).toBe(true);
    expect(s.rowsChecked).toBe(20);
    expect(s.breaks).toEqual([]);
    const v = await verify("z");
    expect(v.code).toBe(0);
    expect(v.out.at(-1)).toMatch(/20 rows checked, intact/);
  });

  it("finds a row changed by SQL (payload and, separately, a column)", async () => {
    await seed("z", 10);
    await db.pool.query(`UPDATE audit_events SET payload_json = jsonb_set(payload_json, '{decision}', '"deny"') WHERE zone_id = 'z' AND chain_seq = 4`);
    await db.pool.query(`UPDATE audit_events SET decision = 'deny' WHERE zone_id = 'z' AND chain_seq = 7`);
    const s = await sweep();
    expect(s.breaks.map((b) => [b.kind, b.chainSeq])).toEqual([
      ["changed", 4],
      ["changed", 7],
    ]);
    expect(await tampered("z")).toEqual([4, 7]);
    const v = await verify("z");
    expect(v.code).toBe(1);
    expect(v.out.filter((l) => l.startsWith("changed"))).toHaveLength(2);
    // a second sweep finds the same breaks but does not alert again
    const again = await sweep();
    expect(again.breaks).toHaveLength(2);
    expect(again.newAlerts).toBe(0);
    const alerts = await db.pool.query("SELECT kind FROM audit_tamper_alerts");
    expect(alerts.rowCount).toBe(2);
  });

  it("finds a row deleted by SQL", async () => {
    await seed("z", 10);
    await db.pool.query("DELETE FROM audit_events WHERE zone_id = 'z' AND chain_seq = 5");
    const s = await sweep();
    expect(s.breaks.map((b) => [b.kind, b.chainSeq])).toEqual([["deleted", 6]]);
    expect(await tampered("z")).toEqual([6]);
    const v = await verify("z");
    expect(v.code).toBe(1);
    expect(v.out.some((l) => l.startsWith("deleted") && l.includes("chain_seq=6"))).toBe(true);
  });

  it("finds rows deleted from the start of a zone unless retention anchored the chain there", async () => {
    await seed("z", 6);
    const row2 = await db.pool.query<{ hmac_chain: string }>("SELECT hmac_chain FROM audit_events WHERE zone_id = 'z' AND chain_seq = 2");
    await db.pool.query("DELETE FROM audit_events WHERE zone_id = 'z' AND chain_seq <= 2");
    const v = await verify("z");
    expect(v.code).toBe(1);
    expect(v.out.some((l) => l.startsWith("deleted") && l.includes("chain_seq=3"))).toBe(true);
    // what retention writes with its delete: the last deleted row as the chain's new start
    await db.pool.query("INSERT INTO audit_chain_anchors (zone_id, chain_seq, hmac_chain) VALUES ('z', 2, $1)", [row2.rows[0]!.hmac_chain]);
    expect((await verify("z")).code).toBe(0);
  });

  it("finds a row inserted by SQL, even with a consistent content hash", async () => {
    await seed("z", 5);
    const e = makeEvent({ zone_id: "z", occurred_at: recent() });
    const { contentSha256 } = await import("../ledger/content.js");
    const sha = contentSha256(e);
    // a forger without the key: the link is computed with another key
    const forgedChain = chainLink(Buffer.alloc(32, 7), "x", sha);
    await db.pool.query(
      `INSERT INTO audit_events (id, zone_id, event_type, decision, evaluation_status, request_id, policy_set_id, policy_set_version_id, manifest_sha,
        payload_json, determining_policies_json, diagnostics_json, metadata_json, hmac_chain, occurred_at, chain_seq, content_sha256)
       VALUES ($1, 'z', $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11::jsonb, $12::jsonb, $13, $14, 6, $15)`,
      [e.id, e.event_type, e.decision, e.evaluation_status, e.request_id, e.policy_set_id, e.policy_set_version_id, e.manifest_sha, JSON.stringify(e),
        JSON.stringify(e.determining_policies_json), JSON.stringify(e.diagnostics_json), JSON.stringify(e.metadata_json), forgedChain, e.occurred_at, sha],
    );
    const s = await sweep();
    expect(s.breaks.map((b) => [b.kind, b.chainSeq])).toEqual([["inserted", 6]]);
    expect(await tampered("z")).toEqual([6]);
    expect((await verify("z")).code).toBe(1);
  });

  it("reports producer-chain gaps only after the grace time, and verifies a time range", async () => {
    const chain = makeChain(5, "p", undefined, undefined, { occurred_at: recent() });
    await writer.writeBatch([ledgerInput(chain[0]!), ledgerInput(chain[1]!), ledgerInput(chain[3]!), ledgerInput(chain[4]!)]);
    const withGrace = await sweepOnce({ pool: db.pool, auditKey: TEST_AUDIT_KEY, rollingHours: 4, gapGraceMs: 3_600_000, intervalMs: 1000 });
    expect(withGrace.breaks.filter((b) => b.kind === "gap")).toEqual([]);
    const s = await sweep();
    const gaps = s.breaks.filter((b) => b.kind === "gap");
    expect(gaps.map((b) => b.eventId)).toEqual([chain[3]!.id]);
    const v = await verify("p", ["--from", new Date(Date.now() - 3_600_000).toISOString()]);
    expect(v.code).toBe(1);
    expect(v.out.some((l) => l.startsWith("gap"))).toBe(true);
  });

  it("exits 2 on bad usage", async () => {
    const out: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => out.push(l) };
    expect(await runVerifyCommand([], { DATABASE_URL: db.url }, io)).toBe(2);
    expect(await runVerifyCommand(["--zone", "z", "--from", "yesterday-ish"], { DATABASE_URL: db.url }, io)).toBe(2);
    expect(await runVerifyCommand(["--zone", "z", "--bogus"], { DATABASE_URL: db.url }, io)).toBe(2);
    expect(await runVerifyCommand(["--zone", "z"], {}, io)).toBe(2);
  });

  it("runs on one replica at a time", async () => {
    await seed("z", 3);
    const holder = await db.pool.connect();
    await holder.query("SELECT pg_advisory_lock($1, $2)", [0x41554454, 0x53574550]);
    try {
      expect((await sweep()).ran).toBe(false);
    } finally {
      await holder.query("SELECT pg_advisory_unlock($1, $2)", [0x41554454, 0x53574550]);
      holder.release();
    }
    expect((await sweep()).ran).toBe(true);
  });
});
