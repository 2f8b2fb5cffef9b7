import { ConfigError } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { loadConfig } from "./config.js";

const base = { DATABASE_URL: "postgres://u:secret@db/x", REDIS_URL: "redis://r:6379", CARACAL_MODE: "rc", STREAMS_HMAC_KEY: "ab".repeat(32) };

describe("revocation consumer config", () => {
  it("has the documented defaults", () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({
      port: 9093,
      group: "resource-revocation",
      consumerName: "revocation-consumer-0",
      ttlMs: 86_400_000,
      reconcileIntervalMs: 60_000,
      reseedIntervalMs: 30_000,
      maxContactAgeMs: 10_000,
      maxSeedAgeMs: 70_000,
      blockMs: 2_000,
      keyPrefix: "",
      reportAppliedIpc: false,
    });
  });

  it("names every bad variable and echoes no value", () => {
    let error: unknown;
    try {
      loadConfig({ ...base, REVOCATION_GROUP: "not-a-group", REVOCATION_TTL_MS: "soon", REVOCATION_BLOCK_MS: "0" });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const text = (error as ConfigError).problems.join("\n");
    expect(text).toContain("REVOCATION_GROUP");
    expect(text).toContain("REVOCATION_TTL_MS");
    expect(text).toContain("REVOCATION_BLOCK_MS");
    expect(text).not.toContain("not-a-group");
    expect(text).not.toContain("secret");
  });

  it("refuses a block time at or above the contact bound (an idle stream would read as stale)", () => {
    expect(() => loadConfig({ ...base, REVOCATION_BLOCK_MS: "10000" })).toThrow(/REVOCATION_BLOCK_MS/);
  });

  it("accepts another registry group of caracal.sessions.revoke", () => {
    expect(loadConfig({ ...base, REVOCATION_GROUP: "gateway-revocation" }).group).toBe("gateway-revocation");
  });
});
