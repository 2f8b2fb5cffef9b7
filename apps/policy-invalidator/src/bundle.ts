/**
 * OPA bundles (a gzipped tarball: `.manifest`, one `{policy_version_id}.rego` per module as upstream names
 * them, `data.json`, and `.signatures.json` when signing is set), built deterministically: the same input
 * gives the same bytes on every replica (fixed entry times, one gzip setting, no signing time), so every
 * replica serves one revision under one ETag.
 */
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";

import { SignJWT } from "jose";
import { pack } from "tar-stream";

export interface BundleModule {
  /** `policy_versions.id`; the file is `{id}.rego`. */
  readonly id: string;
  readonly content: string;
}

export interface BundleSource {
  readonly zoneId: string;
  /** Absent for the deny-all bundle. */
  readonly policySetId?: string | undefined;
  readonly policySetVersionId?: string | undefined;
  readonly manifestSha256?: string | undefined;
  readonly modules: readonly BundleModule[];
}

export interface BundleSigner {
  readonly alg: string;
  readonly keyId: string;
  readonly scope?: string | undefined;
  readonly key: Parameters<SignJWT["sign"]>[0];
}

export interface Bundle {
  readonly zoneId: string;
  readonly revision: string;
  /** `"<revision>"`: a strong ETag. */
  readonly etag: string;
  readonly bytes: Buffer;
  readonly denyAll: boolean;
  readonly policySetVersionId: string | undefined;
  readonly manifestSha256: string | undefined;
  readonly modules: number;
}

/** The package every module lives under; the bundle's one root. */
export const BUNDLE_ROOT = "caracal";

/** Upstream's fail-closed policy: every decision is deny, naming why. */
export const DENY_ALL_MODULE_ID = "fallback";
export const DENY_ALL_REGO = `package caracal.authz

result := {"decision": "deny", "evaluation_status": "complete", "determining_policies": [], "diagnostics": [{"reason": "no_active_policy_set"}]}
`;

/** Thrown when a bundle cannot be built from its source; `reason` labels the failure metric. */
export class BundleBuildError extends Error {
  readonly code = "BUNDLE_BUILD_FAILED";
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

const PACKAGE_LINE = /^\s*package\s+([A-Za-z_][\w.]*)/m;

/**
 * JSON with object keys sorted and no whitespace: how OPA hashes a structured file (`.manifest`,
 * `data.json`) when it verifies a signature. The files are written in this form too, so their bytes and
 * their signed form agree.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value as Record<string, unknown>)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value).replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

const sha256Hex = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

/** Builds the bundle of `source`; the deny-all bundle when `source.modules` is empty and no version is named. */
export async function buildBundle(source: BundleSource, signer?: BundleSigner): Promise<Bundle> {
  const denyAll = source.policySetVersionId === undefined;
  const modules = denyAll ? [{ id: DENY_ALL_MODULE_ID, content: DENY_ALL_REGO }] : source.modules;
  if (modules.length === 0) throw new BundleBuildError("empty_manifest", `zone ${source.zoneId}: the version names no policy`);
  const seen = new Set<string>();
  for (const m of modules) {
    if (seen.has(m.id)) throw new BundleBuildError("duplicate_module", `zone ${source.zoneId}: policy version ${m.id} is listed twice`);
    seen.add(m.id);
    if (!/^[\w.-]+$/.test(m.id)) throw new BundleBuildError("module_id_invalid", `zone ${source.zoneId}: policy version id ${JSON.stringify(m.id)} is not a file name`);
    const pkg = PACKAGE_LINE.exec(m.content)?.[1];
    if (pkg === undefined) throw new BundleBuildError("module_without_package", `zone ${source.zoneId}: policy version ${m.id} has no package line`);
    if (pkg !== BUNDLE_ROOT && !pkg.startsWith(`${BUNDLE_ROOT}.`)) {
      throw new BundleBuildError("package_outside_root", `zone ${source.zoneId}: policy version ${m.id} is package ${pkg}, outside ${BUNDLE_ROOT}`);
    }
  }
  const meta = {
    zone_id: source.zoneId,
    policy_set_id: source.policySetId,
    policy_set_version_id: source.policySetVersionId,
    manifest_sha256: source.manifestSha256,
    deny_all: denyAll,
  };
  const data = canonicalJson({ [BUNDLE_ROOT]: { bundle: meta } });
  const digest = createHash("sha256");
  for (const m of modules) digest.update(`${m.id}\n${m.content.length}\n`).update(m.content);
  digest.update(data);
  const revision = `${denyAll ? "deny-all" : source.policySetVersionId}.${digest.digest("hex").slice(0, 16)}`;
  const manifest = canonicalJson({ revision, roots: [BUNDLE_ROOT], metadata: meta });

  const files: Array<{ name: string; body: Buffer; structured: boolean }> = [
    { name: ".manifest", body: Buffer.from(manifest), structured: true },
    ...modules.map((m) => ({ name: `${m.id}.rego`, body: Buffer.from(m.content), structured: false })),
    { name: "data.json", body: Buffer.from(data), structured: true },
  ];
  if (signer !== undefined) {
    const claims: Record<string, unknown> = { files: files.map((f) => ({ name: f.name, hash: sha256Hex(f.structured ? canonicalJson(JSON.parse(f.body.toString())) : f.body), algorithm: "SHA-256" })) };
    if (signer.scope !== undefined) claims.scope = signer.scope;
    const jwt = await new SignJWT(claims).setProtectedHeader({ alg: signer.alg, kid: signer.keyId, typ: "JWT" }).sign(signer.key);
    files.push({ name: ".signatures.json", body: Buffer.from(canonicalJson({ signatures: [jwt] })), structured: true });
  }
  const bytes = await tarGz(files);
  return { zoneId: source.zoneId, revision, etag: `"${revision}"`, bytes, denyAll, policySetVersionId: source.policySetVersionId, manifestSha256: source.manifestSha256, modules: modules.length };
}

/** The deny-all bundle of a zone (fail-closed). */
export function buildDenyAllBundle(zoneId: string, signer?: BundleSigner): Promise<Bundle> {
  return buildBundle({ zoneId, modules: [] }, signer);
}

async function tarGz(files: ReadonlyArray<{ name: string; body: Buffer }>): Promise<Buffer> {
  const archive = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    archive.on("data", (c: unknown) => chunks.push(c as Buffer));
    archive.on("end", () => resolve());
    archive.on("error", reject);
  });
  for (const f of files) {
    // opa build writes entries with a leading slash; OPA strips it when it reads them
    archive.entry({ name: `/${f.name}`, size: f.body.length, mtime: new Date(0), mode: 0o644, uid: 0, gid: 0, uname: "", gname: "" }, f.body);
  }
  archive.finalize();
  await done;
  return gzipSync(Buffer.concat(chunks), { level: 6 });
}
