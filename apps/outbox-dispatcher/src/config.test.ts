import { ConfigError } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { describeConfig, loadConfig } from "./config.js";

const KEY = "0f".repeat(32);
const base = { DATABASE_URL: "postgres://u:pw@db:5432/caracal", REDIS_URL: "redis://r:6379/3", STREAMS_HMAC_KEY: KEY };

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return [...(error as ConfigError).problems];
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("applies the seed's defaults", () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({
      pollMs: 250,
      batchSize: 32,
      maxAttempts: 100,
      streamMaxLen: 100_000,
      mode: "stable",
      port: 9091,
      keyPrefix: "",
      redisUrl: "redis://r:6379/3",
      retention: { retentionMs: 7 * 86_400_000, intervalMs: 60_000, batchSize: 500 },
    });
    expect(c.signing.signer).toBeDefined();
  });

  it("reads every setting", () => {
    const c = loadConfig({ ...base, CARACAL_OUTBOX_POLL_MS: "100", CARACAL_OUTBOX_BATCH: "64", CARACAL_OUTBOX_MAX_ATTEMPTS: "5", CARACAL_OUTBOX_STREAM_MAXLEN: "1000", PORT: "0", CARACAL_KEY_PREFIX: "t:" });
    expect(c).toMatchObject({ pollMs: 100, batchSize: 64, maxAttempts: 5, streamMaxLen: 1000, port: 0, keyPrefix: "t:" });
  });

  it("names every bad variable at once, never echoing a value", () => {
    const problems = problemsOf({
      DATABASE_URL: "mysql://secret-db",
      REDIS_URL: "http://secret-redis",
      CARACAL_OUTBOX_POLL_MS: "soon",
      CARACAL_OUTBOX_BATCH: "0",
      CARACAL_OUTBOX_MAX_ATTEMPTS: "-1",
      CARACAL_OUTBOX_STREAM_MAXLEN: "1.5",
      STREAMS_HMAC_KEY: "zz-secret-zz",
    });
    const text = problems.join("\n");
    for (const v of ["DATABASE_URL", "REDIS_URL", "CARACAL_OUTBOX_POLL_MS", "CARACAL_OUTBOX_BATCH", "CARACAL_OUTBOX_MAX_ATTEMPTS", "CARACAL_OUTBOX_STREAM_MAXLEN", "STREAMS_HMAC_KEY"]) {
      expect(text).toContain(v);
    }
    expect(text).not.toMatch(/secret/);
  });

  it("requires the key outside dev, and allows unsigned dev", () => {
    expect(problemsOf({ DATABASE_URL: base.DATABASE_URL, REDIS_URL: base.REDIS_URL })).toEqual(["STREAMS_HMAC_KEY: required when CARACAL_MODE=stable"]);
    expect(problemsOf({ DATABASE_URL: base.DATABASE_URL, REDIS_URL: base.REDIS_URL, CARACAL_MODE: "rc" })).toEqual(["STREAMS_HMAC_KEY: required when CARACAL_MODE=rc"]);
    expect(loadConfig({ DATABASE_URL: base.DATABASE_URL, REDIS_URL: base.REDIS_URL, CARACAL_MODE: "dev" }).signing.signer).toBeUndefined();
    expect(problemsOf({ ...base, STREAMS_HMAC_KEY: "ab".repeat(8) })).toEqual([expect.stringMatching(/STREAMS_HMAC_KEY: key decodes to 8 bytes/)]);
  });

  it("wants a lease longer than a publish may take", () => {
    expect(problemsOf({ ...base, CARACAL_OUTBOX_LEASE_MS: "1000", CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS: "1000" })).toEqual([expect.stringMatching(/^CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS/)]);
  });

  it("describes itself without secrets", () => {
    const text = JSON.stringify(describeConfig(loadConfig(base)));
    expect(text).not.toContain(KEY);
    expect(text).not.toContain(":pw@");
    expect(text).toContain("\"keySet\":true");
  });
});
