import { ConfigError } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { describeConfig, loadConfig } from "./config.js";

const KEY = "ab".repeat(32);
const base = { DATABASE_URL: "postgres://u:pw@db:5432/x", REDIS_URL: "redis://r:6379", AUDIT_HMAC_KEY: KEY, STREAMS_HMAC_KEY: KEY };

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  return [];
}

describe("loadConfig", () => {
  it("applies the seed's defaults", () => {
    const c = loadConfig(base);
    expect(c.port).toBe(9090);
    expect(c.maxDeliveries).toBe(5);
    expect(c.claimIdleMs).toBe(30_000);
    expect(c.sweep.rollingHours).toBe(4);
    expect(c.retention.days).toBe(365);
    expect(c.consumerName).toBe("audit-worker-0");
    expect(c.batchSize).toBe(100);
    expect(c.export).toBeUndefined();
    expect(c.mode).toBe("stable");
    expect(c.auditKey?.length).toBe(32);
  });

  it("names every bad variable at once, never the value", () => {
    const p = problems({ DATABASE_URL: "mysql://x", REDIS_URL: "nope", PORT: "x", AUDIT_MAX_DELIVERIES: "0", AUDIT_HMAC_KEY: "zz" + "a".repeat(62), STREAMS_HMAC_KEY: "abc" });
    const names = p.map((s) => s.split(":")[0]);
    expect(names).toEqual(expect.arrayContaining(["DATABASE_URL", "REDIS_URL", "PORT", "AUDIT_MAX_DELIVERIES", "AUDIT_HMAC_KEY", "STREAMS_HMAC_KEY"]));
    expect(p.join("\n")).not.toContain("zz" + "a".repeat(62));
  });

  it("refuses to start without AUDIT_HMAC_KEY in rc and stable, accepts it in dev", () => {
    const { AUDIT_HMAC_KEY: _a, STREAMS_HMAC_KEY: _s, ...noKeys } = base;
    expect(problems({ ...noKeys, CARACAL_MODE: "rc" })).toEqual(expect.arrayContaining([expect.stringMatching(/^AUDIT_HMAC_KEY: required/)]));
    expect(problems(noKeys)).toEqual(expect.arrayContaining([expect.stringMatching(/^AUDIT_HMAC_KEY: required/)]));
    const dev = loadConfig({ ...noKeys, CARACAL_MODE: "dev" });
    expect(dev.auditKey).toBeUndefined();
    expect(dev.signing.signer).toBeUndefined();
  });

  it("turns export on only with endpoint and bucket", () => {
    expect(problems({ ...base, AUDIT_EXPORT_S3_ENDPOINT: "http://minio:9000" })).toEqual([expect.stringMatching(/^AUDIT_EXPORT_S3_BUCKET/)]);
    const on = loadConfig({ ...base, AUDIT_EXPORT_S3_ENDPOINT: "http://minio:9000", AUDIT_EXPORT_S3_BUCKET: "b" }).export;
    expect(on?.s3).toMatchObject({ endpoint: "http://minio:9000", bucket: "b", region: "us-east-1" });
  });

  it("describes the config without secrets", () => {
    const text = JSON.stringify(describeConfig(loadConfig(base)));
    expect(text).not.toContain(KEY);
    expect(text).not.toContain("pw@");
  });
});
