/** Builders of audit events and frames for tests and the benchmark. */
import { randomUUID } from "node:crypto";

import type { AuditEvent, Fields } from "@caracal/streams-core";
import { signAuditData } from "@caracal/streams-core";

import type { LedgerInput } from "../ledger/writer.js";

export const TEST_AUDIT_KEY = Buffer.from("a1".repeat(32), "hex");
export const TEST_STREAMS_KEY_HEX = "b2".repeat(32);

export function makeEvent(overrides: Partial<AuditEvent> & { zone_id?: string } = {}): AuditEvent {
  const id = overrides.id ?? randomUUID();
  return {
    id,
    zone_id: "zone-1",
    event_type: "token.exchange",
    request_id: `req-${id}`,
    decision: "allow",
    policy_set_id: "policy-set-1",
    policy_set_version_id: "policy-set-version-1",
    manifest_sha: "sha256:3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
    evaluation_status: "complete",
    determining_policies_json: [{ id: "baseline-resource-scope" }],
    diagnostics_json: [{ code: "scope_allowed" }],
    metadata_json: { resource: "resource://api", trace_id: "4bf92f3577b34da6a3ce929d0e0e4736" },
    occurred_at: "2026-05-21T12:00:00Z",
    ...overrides,
  };
}

/** An upstream-style frame `{id, data, sig}`. */
export function makeFrame(event: AuditEvent, key: Buffer | undefined = TEST_AUDIT_KEY): Fields {
  const data = JSON.stringify(event);
  const fields: Fields = { id: event.id, data };
  if (key !== undefined) fields.sig = signAuditData(key, data);
  return fields;
}

export function ledgerInput(event: AuditEvent, key: Buffer | undefined = TEST_AUDIT_KEY, streamEntryId?: string): LedgerInput {
  const data = JSON.stringify(event);
  return { key: event.id + (streamEntryId ?? ""), event, data, sig: key ? signAuditData(key, data) : undefined, streamEntryId };
}

/** A producer chain of `n` events in one zone, each `prev` the `sig` of the one before. */
export function makeChain(
  n: number,
  zone: string,
  producer = `producer-${randomUUID()}`,
  key: Buffer = TEST_AUDIT_KEY,
  overrides: Partial<AuditEvent> = {},
): AuditEvent[] {
  const events: AuditEvent[] = [];
  let prev = "";
  for (let seq = 1; seq <= n; seq++) {
    const e = makeEvent({ ...overrides, zone_id: zone, chain: { producer, seq, prev } });
    events.push(e);
    prev = signAuditData(key, JSON.stringify(e));
  }
  return events;
}
