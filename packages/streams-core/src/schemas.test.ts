import { readFileSync } from "node:fs";

import { describe, expect, it } from "vitest";

import { auditEventSchema, sessionRevokeSchema, topicSchemas, policyInvalidateSchema, delegationsInvalidateSchema, formatIssues } from "./schemas.js";
import { Topics } from "./registry.js";

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`./test-fixtures/${name}`, import.meta.url), "utf8")) as Record<string, unknown>;

describe("caracal.sessions.revoke", () => {
  it("accepts the upstream fixture, unknown fields included", () => {
    const parsed = sessionRevokeSchema.parse(fixture("revocation-event.session.valid.json"));
    expect(parsed.session_id).toBe("authority-record-1");
    expect(parsed.outbox_id).toBe("outbox-1");
  });
  it("accepts delegation-only revocations with no session_id", () => {
    const parsed = sessionRevokeSchema.parse({ zone_id: "z", reason: "cascade", delegation_edge_id: "e1" });
    expect(parsed.session_id).toBeUndefined();
  });
  it('reads the literal "null" in an optional id as absent', () => {
    const parsed = sessionRevokeSchema.parse({ zone_id: "z", reason: "r", session_id: "s", grant_id: "null" });
    expect(parsed.grant_id).toBeUndefined();
    expect("grant_id" in parsed && parsed.grant_id !== undefined).toBe(false);
  });
  it("rejects an entry with no anchor, naming the anchors", () => {
    const result = sessionRevokeSchema.safeParse({ zone_id: "z", reason: "r", session_id: "null" });
    expect(result.success).toBe(false);
    if (!result.success) expect(formatIssues(result.error)).toMatch(/session_id, agent_session_id, delegation_edge_id, sid, root_sid/);
  });
  it("rejects a missing zone_id or reason with the field named", () => {
    const result = sessionRevokeSchema.safeParse({ session_id: "s" });
    expect(result.success).toBe(false);
    if (!result.success) expect(formatIssues(result.error)).toMatch(/zone_id.*reason|reason.*zone_id/);
  });
});

describe("other topics", () => {
  it("policy invalidation without a version (deactivation) and with an empty shadow id", () => {
    expect(policyInvalidateSchema.parse({ zone_id: "z", policy_set_id: "p", shadow_version_id: "" }).policy_set_version_id).toBeUndefined();
  });
  it("delegation invalidation requires a JSON array in edge_ids", () => {
    expect(delegationsInvalidateSchema.safeParse({ event: "edge_revoke", zone_id: "z", epoch: "3", edge_ids: '["a"]' }).success).toBe(true);
    expect(delegationsInvalidateSchema.safeParse({ event: "edge_revoke", zone_id: "z", epoch: "3", edge_ids: "a" }).success).toBe(false);
  });
  it("has a schema for every registry topic", () => {
    expect(Object.keys(topicSchemas).sort()).toEqual(Object.keys(Topics).sort());
  });
});

describe("audit event", () => {
  const valid = fixture("audit-event.allow.valid.json");
  it("accepts the upstream fixture", () => {
    expect(auditEventSchema.parse(valid).id).toBe("audit-1");
  });
  it("accepts a producer chain and unknown fields", () => {
    const parsed = auditEventSchema.parse({ ...valid, chain: { producer: "p", seq: 1, prev: "" }, extra: 1 });
    expect(parsed.chain?.seq).toBe(1);
  });
  it.each([
    ["decision", { decision: "maybe" }],
    ["occurred_at", { occurred_at: "yesterday" }],
    ["determining_policies_json", { determining_policies_json: "[]" }],
    ["request_id", { request_id: "" }],
  ])("rejects a bad %s", (field, patch) => {
    const result = auditEventSchema.safeParse({ ...valid, ...patch });
    expect(result.success).toBe(false);
    if (!result.success) expect(formatIssues(result.error)).toContain(field);
  });
});
