import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { ConfigError, signaturePolicy } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";

import { describeSettings, redactUrl, resolveSecretFiles } from "./secrets.js";

describe("redactUrl", () => {
  it.each([
    ["postgres://u:pw@h:5432/db?password=x&sslpassword=y&application_name=a", "postgres://u:[redacted]@h:5432/db?password=[redacted]&sslpassword=[redacted]&application_name=a"],
    ["redis://:s3cret@h:6379/0", "redis://:[redacted]@h:6379/0"],
    ["rediss://user:p%40ss@h", "rediss://user:[redacted]@h"],
    ["redis-cluster://a:pw@h1:7000,b:pw2@h2:7001", "redis-cluster://a:[redacted]@h1:7000,b:[redacted]@h2:7001"],
    ["redis://h:6379", "redis://h:6379"],
  ])("%s", (url, expected) => {
    expect(redactUrl(url)).toBe(expected);
  });
});

describe("describeSettings", () => {
  it("masks keys, tokens, buffers and URL passwords; shows whether a signing key is set", () => {
    const d = describeSettings({
      databaseUrl: "postgres://u:pw@h/db?password=x",
      auditKey: Buffer.alloc(32, 1),
      metricsBearer: "tok",
      signing: signaturePolicy({ mode: "stable", keyHex: "ab".repeat(32) }),
      nested: { adminToken: "t", port: 1 },
    });
    expect(JSON.stringify(d)).not.toMatch(/pw|password=x|tok"|abab/);
    expect(d).toMatchObject({ signing: { mode: "stable", keySet: true }, nested: { adminToken: "[redacted]", port: 1 }, metricsBearer: "[redacted]" });
  });
});

describe("<NAME>_FILE secrets", () => {
  const dir = mkdtempSync(join(tmpdir(), "secrets-"));
  it("reads the file into the setting, trimmed", () => {
    writeFileSync(join(dir, "k"), `${"cd".repeat(32)}\n`);
    expect(resolveSecretFiles({ STREAMS_HMAC_KEY_FILE: join(dir, "k") }).STREAMS_HMAC_KEY).toBe("cd".repeat(32));
  });
  it("refuses both set, and a missing file, naming the variable and never the value", () => {
    writeFileSync(join(dir, "t"), "tok");
    const attempt = () => resolveSecretFiles({ METRICS_BEARER: "inline", METRICS_BEARER_FILE: join(dir, "t"), AUDIT_HMAC_KEY_FILE: join(dir, "nope") });
    expect(attempt).toThrow(ConfigError);
    try {
      attempt();
    } catch (e) {
      const problems = (e as ConfigError).problems;
      expect(problems).toHaveLength(2);
      expect(problems).toEqual(expect.arrayContaining([expect.stringMatching(/^METRICS_BEARER_FILE/), expect.stringMatching(/^AUDIT_HMAC_KEY_FILE: cannot read/)]));
      expect(problems.join()).not.toMatch(/inline|tok/);
    }
  });
});
