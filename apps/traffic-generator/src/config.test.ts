import { ConfigError } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { describeConfig, loadConfig } from "./config.js";

const key = "ab".repeat(32);
const base = { DATABASE_URL: "postgres://u:pw@db:5432/caracal", REDIS_URL: "redis://redis:6379", AUDIT_HMAC_KEY: key, STREAMS_HMAC_KEY: "cd".repeat(32) };

function problems(env: Record<string, string | undefined>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  throw new Error("expected a ConfigError");
}

describe("traffic generator config", () => {
  it("applies the defaults", () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({ port: 9092, mode: "stable", auditRate: 50, outboxRate: 2, durationMs: 0, keyPrefix: "", replayDir: undefined });
    expect(c.zones).toEqual(["zone-1", "zone-2", "zone-3"]);
    expect(c.auditKey?.length).toBe(32);
    expect(c.signing.signer).toBeDefined();
  });

  it("reads rates, zones, duration and the replay dir", () => {
    const c = loadConfig({ ...base, TRAFFIC_AUDIT_RATE: "0.5", TRAFFIC_OUTBOX_RATE: "0", TRAFFIC_ZONES: "2", TRAFFIC_DURATION_MS: "1500", AUDIT_REPLAY_DIR: "/var/lib/caracal/replay" });
    expect(c).toMatchObject({ auditRate: 0.5, outboxRate: 0, durationMs: 1500, replayDir: "/var/lib/caracal/replay", zones: ["zone-1", "zone-2"] });
  });

  it("names every bad variable at once, without echoing values", () => {
    const found = problems({ DATABASE_URL: "mysql://x", REDIS_URL: base.REDIS_URL, TRAFFIC_AUDIT_RATE: "-1", TRAFFIC_ZONES: "many", AUDIT_HMAC_KEY: "zz-secret-zz", CARACAL_MODE: "rc" });
    const text = found.join("\n");
    for (const name of ["DATABASE_URL", "TRAFFIC_AUDIT_RATE", "TRAFFIC_ZONES", "AUDIT_HMAC_KEY", "STREAMS_HMAC_KEY"]) expect(text).toContain(name);
    expect(text).not.toContain("zz-secret-zz");
  });

  it("requires both keys outside dev, and allows neither in dev", () => {
    const found = problems({ DATABASE_URL: base.DATABASE_URL, REDIS_URL: base.REDIS_URL });
    expect(found.some((p) => p.startsWith("AUDIT_HMAC_KEY: required"))).toBe(true);
    expect(found.some((p) => p.startsWith("STREAMS_HMAC_KEY: required"))).toBe(true);
    const dev = loadConfig({ DATABASE_URL: base.DATABASE_URL, REDIS_URL: base.REDIS_URL, CARACAL_MODE: "dev" });
    expect(dev.auditKey).toBeUndefined();
    expect(dev.signing.signer).toBeUndefined();
  });

  it("describes itself without keys or passwords", () => {
    const text = JSON.stringify(describeConfig(loadConfig(base)));
    expect(text).not.toContain(key);
    expect(text).not.toContain("pw@");
    expect(text).toContain('"auditKeySet":true');
  });
});
