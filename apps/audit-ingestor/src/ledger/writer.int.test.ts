import { createMigratedDatabase, hasPostgres } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";


import { ledgerInput, makeChain, makeEvent, TEST_AUDIT_KEY } from "../test-support/events.js";
import { chainLink, contentSha256 } from "./content.js";
import { LedgerWriter } from "./writer.js";

describe.skipIf(!hasPostgres())("LedgerWriter", () => {
  let db: TestDatabase;
  let writer: LedgerWriter;
  beforeEach(async () => {
    db = await createMigratedDatabase();
    writer = new LedgerWriter({ pool: db.pool, auditKey: TEST_AUDIT_KEY });
  });
  afterEach(async () => {
    await db.drop();
  });

  async function rows(zone: string) {
    const r = await db.pool.query<{ id: string; chain_seq: string; hmac_chain: string; content_sha256: string; tamper_detected: boolean }>(
      "SELECT id, chain_seq, hmac_chain, content_sha256, tamper_detected FROM audit_events WHERE zone_id = $1 ORDER BY chain_seq",
      [zone],
    );
    return r.rows;
  }

  it("stores a batch with a gap-free per-zone chain that links every row to the previous one", async () => {
    const events = [makeEvent({ zone_id: "z1" }), makeEvent({ zone_id: "z2" }), makeEvent({ zone_id: "z1" }), makeEvent({ zone_id: "z1" })];
    const result = await writer.writeBatch(events.map((e) => ledgerInput(e)));
    expect(result.inserted).toBe(4);
    const z1 = await rows("z1");
    expect(z1.map((r) => Number(r.chain_seq))).toEqual([1, 2, 3]);
    expect(z1.map((r) => r.id)).toEqual([events[0]!.id, events[2]!.id, events[3]!.id]);
    let prev = "";
    for (const r of z1) {
      expect(r.content_sha256).toBe(contentSha256(JSON.parse(JSON.stringify(events.find((e) => e.id === r.id)))));
      expect(r.hmac_chain).toBe(chainLink(TEST_AUDIT_KEY, prev, r.content_sha256));
      prev = r.hmac_chain;
    }
    expect((await rows("z2")).map((r) => Number(r.chain_seq))).toEqual([1]);
  });

  it("treats a redelivery as a no-op and keeps chain_seq gap-free when a batch mixes old and new events", async () => {
    const a = makeEvent({ zone_id: "z" });
    const b = makeEvent({ zone_id: "z" });
    const c = makeEvent({ zone_id: "z" });
    await writer.writeBatch([ledgerInput(a), ledgerInput(b)]);
    const again = await writer.writeBatch([ledgerInput(a), ledgerInput(c), ledgerInput(b), ledgerInput(c, TEST_AUDIT_KEY, "1-1")]);
    expect(again.inserted).toBe(1);
    expect(again.duplicates).toBe(3);
    expect(again.rejected.size).toBe(0);
    expect((await rows("z")).map((r) => [r.id, Number(r.chain_seq)])).toEqual([
      [a.id, 1],
      [b.id, 2],
      [c.id, 3],
    ]);
  });

  it("finds stored ids whether or not the entries are marked redelivered, for chained and unchained events", async () => {
    const chained = makeChain(4, "zc");
    const plain = [makeEvent({ zone_id: "zp" }), makeEvent({ zone_id: "zp" })];
    await writer.writeBatch([...chained.slice(0, 2), plain[0]!].map((e) => ledgerInput(e)));
    for (const redelivered of [false, true]) {
      const again = await writer.writeBatch([...chained.slice(0, 3), ...plain].map((e) => ({ ...ledgerInput(e), redelivered })));
      expect(again.inserted).toBe(redelivered ? 0 : 2);
      expect(again.duplicates).toBe(redelivered ? 5 : 3);
      expect(again.rejected.size).toBe(0);
      expect(again.alerts).toEqual([]);
    }
    expect((await rows("zc")).map((r) => [r.id, Number(r.chain_seq), r.tamper_detected])).toEqual(chained.slice(0, 3).map((e, i) => [e.id, i + 1, false]));
    expect((await rows("zp")).map((r) => r.id)).toEqual(plain.map((e) => e.id));
  });

  it("rejects the same id with different content as tamper_on_replay and writes an alert", async () => {
    const a = makeEvent({ zone_id: "z" });
    await writer.writeBatch([ledgerInput(a)]);
    const forged = { ...a, decision: "deny" as const };
    const input = ledgerInput(forged);
    const result = await writer.writeBatch([input, ledgerInput(makeEvent({ zone_id: "z" }))]);
    expect(result.rejected.get(input.key)?.reason).toBe("tamper_on_replay");
    expect(result.inserted).toBe(1);
    const alerts = await db.pool.query("SELECT zone_id, event_id, kind FROM audit_tamper_alerts");
    expect(alerts.rows).toEqual([{ zone_id: "z", event_id: a.id, kind: "tamper_on_replay" }]);
    expect((await rows("z")).map((r) => Number(r.chain_seq))).toEqual([1, 2]);
  });

  it("hashes content independently of key order (JCS)", async () => {
    const a = makeEvent({ zone_id: "z" });
    const reordered = Object.fromEntries(Object.entries(a).reverse());
    expect(contentSha256(reordered)).toBe(contentSha256(a));
    await writer.writeBatch([ledgerInput(a)]);
    const input = { ...ledgerInput(a), data: JSON.stringify(reordered) };
    const result = await writer.writeBatch([input]);
    expect(result.duplicates).toBe(1);
    expect(result.rejected.size).toBe(0);
  });

  it("marks producer-chain forks and broken links, but not gaps", async () => {
    const chain = makeChain(4, "z");
    // event 2 missing: a gap, left to the sweeper
    await writer.writeBatch([ledgerInput(chain[0]!), ledgerInput(chain[2]!)]);
    expect((await rows("z")).every((r) => !r.tamper_detected)).toBe(true);
    // a fork of seq 3 (same producer and seq, other content) and a late seq 2 that links correctly
    const fork = makeEvent({ zone_id: "z", chain: chain[2]!.chain });
    await writer.writeBatch([ledgerInput(chain[1]!), ledgerInput(fork)]);
    const stored = await rows("z");
    const tampered = stored.filter((r) => r.tamper_detected).map((r) => r.id).sort();
    // the fork and the original seq 3; seq 3's successor link from seq 2 is still right
    expect(tampered).toEqual([chain[2]!.id, fork.id].sort());
    const kinds = await db.pool.query<{ kind: string }>("SELECT kind FROM audit_tamper_alerts ORDER BY kind");
    expect(kinds.rows.map((r) => r.kind)).toEqual(["fork", "fork"]);
    // a seq 4 whose prev is not seq 3's sig
    const broken = makeEvent({ zone_id: "z", chain: { ...chain[3]!.chain!, prev: "00".repeat(32) } });
    await writer.writeBatch([ledgerInput(broken)]);
    const b = (await rows("z")).find((r) => r.id === broken.id);
    expect(b?.tamper_detected).toBe(true);
  });

  /** The zone's rows carry chain_seq 1..n and each hmac_chain links to the previous row's. */
  const expectGapFreeChain = async (zone: string) => {
    const r = await rows(zone);
    expect(r.map((x) => Number(x.chain_seq))).toEqual(r.map((_, i) => i + 1));
    let prev = "";
    for (const x of r) {
      expect(x.hmac_chain).toBe(chainLink(TEST_AUDIT_KEY, prev, x.content_sha256));
      prev = x.hmac_chain;
    }
  };

  it("two writers on the same zones at once produce one gap-free chain", async () => {
    const other = new LedgerWriter({ pool: db.pool, auditKey: TEST_AUDIT_KEY });
    const zones = ["a", "b", "c"];
    const batches = Array.from({ length: 20 }, (_, i) =>
      Array.from({ length: 10 }, (_, j) => ledgerInput(makeEvent({ zone_id: zones[(i + j) % 3]! }))),
    );
    await Promise.all(batches.map((batch, i) => (i % 2 === 0 ? writer : other).writeBatch(batch)));
    for (const z of zones) await expectGapFreeChain(z);
    const count = await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM audit_events");
    expect(Number(count.rows[0]!.n)).toBe(200);
  });

  it("merges batches handed in concurrently (group commit) and still reports per batch", async () => {
    const batches = Array.from({ length: 6 }, () => Array.from({ length: 5 }, () => ledgerInput(makeEvent({ zone_id: "g" }))));
    const dup = ledgerInput(batches[0]![0]!.event, TEST_AUDIT_KEY, "9-9");
    const results = await Promise.all([...batches.map((b) => writer.writeBatch(b)), writer.writeBatch([dup])]);
    expect(results.slice(0, 6).map((r) => r.inserted)).toEqual([5, 5, 5, 5, 5, 5]);
    expect(results[6]!.inserted + results[6]!.duplicates).toBe(1);
    expect((await rows("g")).map((r) => Number(r.chain_seq))).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });

  it("keeps one gap-free chain per zone when the next transaction starts while the previous one commits", async () => {
    const zones = ["a", "b"];
    const batches = Array.from({ length: 30 }, (_, i) => Array.from({ length: 8 }, (_, j) => ledgerInput(makeEvent({ zone_id: zones[(i + j) % 2]! }))));
    // batches handed in over time, so that transactions follow one another with their commits overlapping
    const results = await Promise.all(batches.map((b, i) => new Promise((r) => setTimeout(r, i % 10)).then(() => writer.writeBatch(b))));
    expect(results.map((r) => r.inserted)).toEqual(batches.map(() => 8));
    for (const z of zones) await expectGapFreeChain(z);
    const sequential = new LedgerWriter({ pool: db.pool, auditKey: TEST_AUDIT_KEY, overlapCommits: false });
    await Promise.all(batches.slice(0, 4).map((b) => sequential.writeBatch(b.map((x) => ledgerInput(makeEvent({ zone_id: x.event.zone_id }))))));
    expect((await rows("a")).map((x) => Number(x.chain_seq))).toEqual(Array.from({ length: 136 }, (_, i) => i + 1));
  });

  it("retries when a concurrent insert of the same id lands in another zone", async () => {
    const a = makeEvent({ zone_id: "z1" });
    const forged = { ...a, zone_id: "z2" };
    const [r1, r2] = await Promise.all([writer.writeBatch([ledgerInput(a)]), writer.writeBatch([ledgerInput(forged)])]);
    expect(r1.inserted + r2.inserted).toBe(1);
    expect(r1.rejected.size + r2.rejected.size).toBe(1);
    const all = await db.pool.query<{ zone_id: string; chain_seq: string }>("SELECT zone_id, chain_seq FROM audit_events");
    expect(all.rows.map((r) => Number(r.chain_seq))).toEqual([1]);
  });
});
