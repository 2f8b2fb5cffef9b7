import { Topics } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { outboxEntry } from "./fields.js";

describe("outboxEntry", () => {
  it("flattens payload_json per WIRE §2 and adds outbox_id", () => {
    const check = outboxEntry(Topics.delegationsInvalidate.stream, { event: "edge_expire", zone_id: "z", epoch: 7, edge_ids: ["a"], affected_edges: null, flag: false }, "row-1");
    expect(check).toEqual({
      ok: true,
      topic: Topics.delegationsInvalidate,
      fields: { event: "edge_expire", zone_id: "z", epoch: "7", edge_ids: '["a"]', flag: "false", outbox_id: "row-1" },
    });
  });
  it("drops a stored _sig (the dispatcher signs) and overrides a stored outbox_id with the row id", () => {
    const check = outboxEntry(Topics.keysInvalidate.stream, { zone_id: "z", _sig: "forged", outbox_id: "other" }, "row-2");
    expect(check.ok && check.fields).toEqual({ zone_id: "z", outbox_id: "row-2" });
  });
  it("names the reason a row can never be published", () => {
    expect(outboxEntry("caracal.unknown", {}, "r")).toMatchObject({ ok: false, reason: "unknown_stream" });
    expect(outboxEntry(Topics.keysInvalidate.stream, "text", "r")).toMatchObject({ ok: false, reason: "payload_invalid" });
    expect(outboxEntry(Topics.keysInvalidate.stream, null, "r")).toMatchObject({ ok: false, reason: "payload_invalid" });
    expect(outboxEntry(Topics.keysInvalidate.stream, [1], "r")).toMatchObject({ ok: false, reason: "payload_invalid" });
    const bad = outboxEntry(Topics.agentsLifecycle.stream, { event: "explode", zone_id: "z", agent_session_id: "a" }, "r");
    expect(bad).toMatchObject({ ok: false, reason: "schema_invalid" });
    expect(!bad.ok && bad.message).toMatch(/caracal\.agents\.lifecycle: event/);
  });
});
