import { createHash, generateKeyPairSync } from "node:crypto";

import { compactVerify, importPKCS8, importSPKI } from "jose";
import { describe, expect, it } from "vitest";

import type { BundleBuildError } from "./bundle.js";
import { readBundle } from "./test-support/read-bundle.js";
import { DENY_ALL_REGO, buildBundle, buildDenyAllBundle, canonicalJson } from "./bundle.js";

const modules = [
  { id: "pv-1", content: "package caracal.authz\n\nallow_read if input.action == \"read\"\n" },
  { id: "pv-2", content: "package caracal.authz.helpers\n\nx := 1\n" },
];
const source = { zoneId: "z1", policySetId: "ps", policySetVersionId: "psv-1", manifestSha256: "ab".repeat(32), modules };

describe("buildBundle", () => {
  it("writes .manifest, every module byte for byte under {id}.rego, and data.json", async () => {
    const bundle = await buildBundle(source);
    const files = await readBundle(bundle.bytes);
    expect([...files.keys()]).toEqual(["/.manifest", "/pv-1.rego", "/pv-2.rego", "/data.json"]);
    expect(files.get("/pv-1.rego")?.equals(Buffer.from(modules[0]!.content))).toBe(true);
    expect(files.get("/pv-2.rego")?.equals(Buffer.from(modules[1]!.content))).toBe(true);
    const manifest = JSON.parse(files.get("/.manifest")!.toString());
    expect(manifest).toEqual({ revision: bundle.revision, roots: ["caracal"], metadata: { zone_id: "z1", policy_set_id: "ps", policy_set_version_id: "psv-1", manifest_sha256: "ab".repeat(32), deny_all: false } });
    expect(JSON.parse(files.get("/data.json")!.toString())).toEqual({ caracal: { bundle: manifest.metadata } });
    expect(bundle.revision).toMatch(/^psv-1\.[0-9a-f]{16}$/);
    expect(bundle.etag).toBe(`"${bundle.revision}"`);
  });

  it("is deterministic: the same source gives the same bytes; other content, another revision", async () => {
    const a = await buildBundle(source);
    const b = await buildBundle(source);
    expect(a.bytes.equals(b.bytes)).toBe(true);
    const c = await buildBundle({ ...source, modules: [modules[0]!] });
    expect(c.revision).not.toBe(a.revision);
  });

  it("deny-all: upstream's fail-closed module", async () => {
    const bundle = await buildDenyAllBundle("z9");
    const files = await readBundle(bundle.bytes);
    expect(bundle.denyAll).toBe(true);
    expect(bundle.revision).toMatch(/^deny-all\./);
    expect(files.get("/fallback.rego")?.toString()).toBe(DENY_ALL_REGO);
    expect(DENY_ALL_REGO).toContain('"diagnostics": [{"reason": "no_active_policy_set"}]');
  });

  it("refuses modules outside the caracal root, without a package, or listed twice", async () => {
    const reason = async (m: Array<{ id: string; content: string }>) => {
      try {
        await buildBundle({ ...source, modules: m });
        return "built";
      } catch (error) {
        return (error as BundleBuildError).reason;
      }
    };
    expect(await reason([{ id: "x", content: "package other\n" }])).toBe("package_outside_root");
    expect(await reason([{ id: "x", content: "# nothing\n" }])).toBe("module_without_package");
    expect(await reason([modules[0]!, modules[0]!])).toBe("duplicate_module");
    expect(await reason([])).toBe("empty_manifest");
  });

  it("signs in OPA's format: a JWT over every file's SHA-256, verified with the public key", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const key = await importPKCS8(privateKey.export({ type: "pkcs8", format: "pem" }).toString(), "RS256");
    const bundle = await buildBundle(source, { alg: "RS256", keyId: "global_key", key, scope: "read" });
    const files = await readBundle(bundle.bytes);
    expect([...files.keys()].at(-1)).toBe("/.signatures.json");
    const { signatures } = JSON.parse(files.get("/.signatures.json")!.toString()) as { signatures: string[] };
    expect(signatures).toHaveLength(1);
    const verified = await compactVerify(signatures[0]!, await importSPKI(publicKey.export({ type: "spki", format: "pem" }).toString(), "RS256"));
    expect(verified.protectedHeader).toMatchObject({ alg: "RS256", kid: "global_key", typ: "JWT" });
    const payload = JSON.parse(new TextDecoder().decode(verified.payload)) as { files: Array<{ name: string; hash: string; algorithm: string }>; scope: string };
    expect(payload.scope).toBe("read");
    // every file but the signatures is listed, with the hash OPA computes (structured files: sorted compact JSON)
    const expected = [...files.entries()]
      .filter(([name]) => name !== "/.signatures.json")
      .map(([name, body]) => {
        const structured = name.endsWith(".json") || name.endsWith(".manifest");
        const hash = createHash("sha256").update(structured ? canonicalJson(JSON.parse(body.toString())) : body).digest("hex");
        return { name: name.slice(1), hash, algorithm: "SHA-256" };
      });
    expect(payload.files).toEqual(expected);
    // a tampered module no longer matches its signed hash
    const tampered = createHash("sha256").update("package caracal.authz\nallow := true\n").digest("hex");
    expect(payload.files.find((f) => f.name === "pv-1.rego")?.hash).not.toBe(tampered);
  });

  it("canonicalJson sorts keys at every depth and drops undefined members", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } })).toBe('{"a":{"d":[1,{"y":2,"z":1}]},"b":1}');
  });
});
