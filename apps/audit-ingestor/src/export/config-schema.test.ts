import { loadEnv } from "@caracal/service-kit";
import { ConfigError } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { retentionBatchSize, retentionConfigSchema } from "../retention/config-schema.js";
import { exportConfigSchema, exportS3ConfigFrom } from "./config-schema.js";

describe("export and retention config fragments", () => {
  it("defaults: export off, retention 365 days every hour, batches of 500", () => {
    const e = loadEnv(exportConfigSchema, {});
    expect(exportS3ConfigFrom(e)).toBeUndefined();
    expect(e).toMatchObject({ AUDIT_EXPORT_S3_REGION: "us-east-1", AUDIT_EXPORT_S3_FORCE_PATH_STYLE: true, AUDIT_EXPORT_SETTLE_MS: 300_000 });
    const r = loadEnv(retentionConfigSchema, {});
    expect(r).toEqual({ AUDIT_RETENTION_DAYS: 365, AUDIT_RETENTION_INTERVAL_MS: 3_600_000, AUDIT_MAX_DELIVERIES: 5 });
    expect(retentionBatchSize(r.AUDIT_MAX_DELIVERIES)).toBe(500);
  });

  it("export is on with endpoint and bucket", () => {
    const e = loadEnv(exportConfigSchema, { AUDIT_EXPORT_S3_ENDPOINT: "http://minio:9000", AUDIT_EXPORT_S3_BUCKET: "audit", AUDIT_EXPORT_S3_FORCE_PATH_STYLE: "false" });
    expect(exportS3ConfigFrom(e)).toEqual({ endpoint: "http://minio:9000", bucket: "audit", region: "us-east-1", forcePathStyle: false });
  });

  it("names every bad variable at once", () => {
    const bad = { AUDIT_EXPORT_S3_ENDPOINT: "minio:9000", AUDIT_EXPORT_INTERVAL_MS: "soon", AUDIT_EXPORT_PAGE_ROWS: "5" };
    let error: unknown;
    try {
      loadEnv(exportConfigSchema, bad);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    for (const name of Object.keys(bad)) expect(problems).toContain(name);
    expect(() => loadEnv(retentionConfigSchema, { AUDIT_RETENTION_DAYS: "0" })).toThrow(/AUDIT_RETENTION_DAYS/);
  });
});
