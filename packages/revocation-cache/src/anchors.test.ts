import { describe, expect, it } from "vitest";

import { anchorsOf, delegationEpochKey, entryIdMs, revokedKey } from "./anchors.js";

describe("anchors", () => {
  it("lists present anchors; empty, null and the literal \"null\" are absent; edge_id reads as delegation_edge_id", () => {
    expect(anchorsOf({ session_id: "s", sid: "null", root_sid: "", agent_session_id: null, edge_id: "e" })).toEqual([
      ["session_id", "s"],
      ["delegation_edge_id", "e"],
    ]);
    expect(anchorsOf({ delegation_edge_id: "e", edge_id: "e" })).toEqual([["delegation_edge_id", "e"]]);
    expect(anchorsOf({})).toEqual([]);
  });

  it("spells upstream's keys, with the prefix in front only when one is set", () => {
    expect(revokedKey("", "abc")).toBe("caracal:revoked:sessions:abc");
    expect(revokedKey("t:1:", "abc")).toBe("t:1:caracal:revoked:sessions:abc");
    expect(delegationEpochKey("", "z")).toBe("caracal:revoked:sessions:delegation-epoch:z");
  });

  it("reads the time of a stream entry id", () => {
    expect(entryIdMs("1700000000123-4")).toBe(1700000000123);
  });
});
