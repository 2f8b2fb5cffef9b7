import { describe, expect, it } from "vitest";

import { toDeadLetterView } from "./dead-letters.js";
import { compareEntryIds, dedupeKey, invocationState, occurredAtOf } from "./state.js";

describe("observer state helpers", () => {
  it("dedupe key prefers outbox_id, then dedupe_key, then the entry id", () => {
    expect(dedupeKey("s", "1-0", { outbox_id: "o", dedupe_key: "d" })).toBe("outbox:o");
    expect(dedupeKey("s", "1-0", { dedupe_key: "d" })).toBe("key:d");
    expect(dedupeKey("s", "1-0", {})).toBe("id:s:1-0");
  });
  it("compares entry ids numerically, not as text", () => {
    expect(compareEntryIds("9-0", "10-0")).toBe(-1);
    expect(compareEntryIds("10-2", "10-10")).toBe(-1);
    expect(compareEntryIds("10-1", "10-1")).toBe(0);
  });
  it("reads occurred_at with nanoseconds and offsets, else the entry time", () => {
    expect(occurredAtOf("5-0", { occurred_at: "2026-01-01T01:00:00.123456789+01:00" })).toEqual({ occurredAt: "2026-01-01T01:00:00.123456+01:00", occurredMs: Date.parse("2026-01-01T00:00:00.123Z") });
    expect(occurredAtOf("5-0", { occurred_at: "garbage" }).occurredMs).toBe(5);
  });
  it("maps invocation events to running or their finished state", () => {
    expect(invocationState("invocation.started")).toBe("running");
    expect(invocationState("invocation.cancel_requested")).toBe("running");
    expect(invocationState("invocation.timed_out")).toBe("timed_out");
  });
  it("reads src.<field> and the older src_<field> dead-letter formats; src. wins", () => {
    const v = toDeadLetterView("1-0", { reason: "r", src_stream: "x", src_id: "2-0", deliveries: "3", "src.id": "new", src_zone_id: "z", "src.zone_id": "z2" });
    expect(v.src).toEqual({ id: "new", zone_id: "z2" });
    expect(v.src_id).toBe("2-0");
    expect(v.deliveries).toBe(3);
  });
});
