import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { DEAD_LETTER_MAXLEN, Topics, maxLenOf, streamKey, topicByStream } from "./registry.js";

describe("topic registry (WIRE §1)", () => {
  it("has every stream with its groups, MAXLEN and dead letters", () => {
    expect(Topics.auditEvents).toMatchObject({ stream: "caracal.audit.events", maxLen: 1_000_000, deadLetterStream: "caracal.audit.events.dlq" });
    expect(Object.values(Topics.auditEvents.groups)).toEqual(["audit-ingestor", "siem-export"]);
    expect(Object.values(Topics.sessionsRevoke.groups)).toEqual(["sts-revocation", "gateway-revocation", "resource-revocation"]);
    expect(Topics.auditEventsDlq.deadLetterStream).toBeUndefined();
    for (const t of Object.values(Topics)) {
      if (t.name !== "auditEvents") expect(t.maxLen).toBe(100_000);
      if (t.name !== "auditEvents" && t.name !== "auditEventsDlq") expect(t.deadLetterStream).toBe(`${t.stream}.dead`);
    }
  });
  it("resolves MAXLEN for dead-letter streams and prefixes keys without touching the logical name", () => {
    expect(maxLenOf("caracal.sessions.revoke.dead")).toBe(DEAD_LETTER_MAXLEN);
    expect(topicByStream("caracal.policy.invalidate")?.name).toBe("policyInvalidate");
    expect(streamKey("caracal.policy.invalidate", "t:1:")).toBe("t:1:caracal.policy.invalidate");
  });
});

/** Every stream and group name lives in registry.ts only: a literal elsewhere in source is a bug. */
describe("no stream or group literal outside the registry", () => {
  const root = fileURLToPath(new URL("../../../", import.meta.url));
  const names = Object.values(Topics).flatMap((t) => [t.stream, ...Object.values(t.groups), ...(t.deadLetterStream ? [t.deadLetterStream] : [])]);
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      if (entry === "node_modules" || entry === "dist" || entry.startsWith(".")) continue;
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.ts$/.test(entry) && !/\.test\.ts$/.test(entry) && !path.includes("test-support") && !path.includes(`${join("src", "bench")}`)) files.push(path);
    }
  };
  walk(join(root, "packages"));
  walk(join(root, "apps"));
  it("finds the source files", () => expect(files.length).toBeGreaterThan(5));
  it("registry.ts is the only source that spells them", () => {
    const offenders: string[] = [];
    for (const file of files) {
      if (file.endsWith(join("streams-core", "src", "registry.ts"))) continue;
      // Comments may name streams (they document contracts); code may not.
      const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
      for (const name of names) if (text.includes(`"${name}"`) || text.includes(`'${name}'`) || text.includes(`\`${name}\``)) offenders.push(`${relative(root, file)}: ${name}`);
    }
    expect(offenders).toEqual([]);
  });
});
