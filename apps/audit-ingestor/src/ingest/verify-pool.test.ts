import { TransientError, encodeAuditFrame } from "@caracal/streams-core";
import { afterEach, describe, expect, it } from "vitest";

import { TEST_AUDIT_KEY, makeChain, makeEvent } from "../test-support/events.js";
import type { EntryToVerify, VerifyOutcome } from "./verify.js";
import { decodeOutcomes, encodeOutcomes, verifyEntries } from "./verify.js";
import { VerifyPool } from "./verify-pool.js";

function entries(): EntryToVerify[] {
  const good = [...makeChain(3, "z1"), makeEvent({ zone_id: "z2" })].map((e, i) => ({ id: `1-${i}`, fields: encodeAuditFrame(e, TEST_AUDIT_KEY), redelivered: i === 0 }));
  const forged = { ...encodeAuditFrame(makeEvent({ zone_id: "z3" }), TEST_AUDIT_KEY), sig: "00".repeat(32) };
  const notJson = { id: "x", data: "{", sig: "00" };
  return [...good, { id: "2-0", fields: forged, redelivered: false }, { id: "2-1", fields: notJson, redelivered: false }];
}

/** Outcomes with each COPY prefix as text (a worker sends them as bytes). */
function asText(outcomes: readonly VerifyOutcome[]): VerifyOutcome[] {
  return outcomes.map((o) => (o.ok ? { ok: true, deviations: o.deviations, prepared: { ...o.prepared, copyPrefix: typeof o.prepared.copyPrefix === "string" ? o.prepared.copyPrefix : Buffer.from(o.prepared.copyPrefix).toString("utf8") } } : o));
}

describe("VerifyPool", () => {
  let pool: VerifyPool | undefined;
  afterEach(async () => {
    await pool?.close();
  });

  it("gives the same outcomes, in order, as verification on the calling thread", async () => {
    pool = new VerifyPool(2, TEST_AUDIT_KEY);
    const batch = entries();
    const [a, b] = await Promise.all([pool.verify(batch), pool.verify(batch.slice(0, 2))]);
    expect(asText(a)).toEqual(verifyEntries(batch, TEST_AUDIT_KEY));
    expect(asText(b)).toEqual(verifyEntries(batch.slice(0, 2), TEST_AUDIT_KEY));
    // the prefixes arrive as UTF-8 bytes, non-ASCII text included
    const accented = { id: "3-0", fields: encodeAuditFrame(makeEvent({ zone_id: "zoné-€" }), TEST_AUDIT_KEY), redelivered: false };
    const [withText] = await pool.verify([accented]);
    expect(withText?.ok && withText.prepared.copyPrefix instanceof Uint8Array).toBe(true);
    expect(asText([withText!])).toEqual(verifyEntries([accented], TEST_AUDIT_KEY));
    expect(a.map((o) => (o.ok ? "ok" : o.reason))).toEqual(["ok", "ok", "ok", "ok", "signature_invalid", "signature_invalid"]);
    const first = a[0]!;
    expect(first.ok && first.prepared.redelivered).toBe(true);
  });

  it("fails the batches of a worker that dies with a TransientError and replaces the worker", async () => {
    pool = new VerifyPool(1, TEST_AUDIT_KEY);
    const pending = pool.verify(entries());
    // the pool's only worker, killed while the batch is in flight
    await (pool as unknown as { slots: Array<{ worker: { terminate(): Promise<number> } }> }).slots[0]!.worker.terminate();
    await expect(pending).rejects.toBeInstanceOf(TransientError);
    const again = await pool.verify(entries());
    expect(again.filter((o) => o.ok)).toHaveLength(4);
  });

  it("sends COPY prefixes longer than their UTF-16 length guess (non-ASCII text) intact", () => {
    // 3-byte UTF-8 characters: the bytes outgrow the buffer's first size, which is then grown
    const batch = Array.from({ length: 40 }, (_, i) => ({
      id: `4-${i}`,
      fields: encodeAuditFrame(makeEvent({ zone_id: "z", metadata_json: { note: "€".repeat(1000 + i) } }), TEST_AUDIT_KEY),
      redelivered: false,
    }));
    const outcomes = verifyEntries(batch, TEST_AUDIT_KEY);
    const encoded = encodeOutcomes(outcomes);
    expect(asText(decodeOutcomes(encoded))).toEqual(outcomes);
  });
});
