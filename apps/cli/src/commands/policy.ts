/**
 * `policy status`: per zone with an active policy binding (upstream's `policy_set_bindings`), the active
 * version and its manifest hash from PostgreSQL, and the bundle revision each policy-invalidator replica
 * serves (its `caracal_policy_bundle_revision_info{zone,revision}` gauge), with whether the replicas
 * agree. Replicas: `--replica <url>` (repeatable) or POLICY_INVALIDATOR_URLS (comma-separated). Exit 1
 * when replicas disagree, a bound zone has no bundle on some replica, or a replica cannot be read.
 */
import type { Connections, Env } from "../config.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { printJson, renderTable } from "../output.js";

export interface ZonePolicyStatus {
  zone: string;
  policySetId: string;
  activeVersionId: string;
  version: number | null;
  manifestSha256: string | null;
  /** Revision served per replica URL; null when the replica serves no bundle for the zone. */
  revisions: Record<string, string | null>;
  agree: boolean;
}

/** Revisions per zone from one replica's metrics; throws when the replica cannot be read. */
export async function replicaRevisions(url: string, bearer: string | undefined): Promise<Map<string, string>> {
  const response = await fetch(new URL("/metrics", url), { headers: bearer ? { authorization: `Bearer ${bearer}` } : {}, signal: AbortSignal.timeout(5_000) });
  if (!response.ok) throw new Error(`${url}/metrics answered ${response.status}`);
  const text = await response.text();
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("caracal_policy_bundle_revision_info{")) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (value === 1 && labels.zone !== undefined && labels.revision !== undefined) out.set(labels.zone, labels.revision);
  }
  return out;
}

export function replicaUrls(env: Env, given: readonly string[] | undefined): string[] {
  const urls = given && given.length > 0 ? [...given] : (env.POLICY_INVALIDATOR_URLS ?? "").split(",").map((u) => u.trim()).filter((u) => u !== "");
  for (const u of urls) {
    try {
      new URL(u);
    } catch {
      throw new CliError(`not a URL: ${u}`, ExitCode.usage);
    }
  }
  return urls;
}

export async function policyStatus(conn: Connections, io: Io, options: { zone?: string; replicas: readonly string[]; json?: boolean }): Promise<{ statuses: ZonePolicyStatus[]; problems: string[] }> {
  const { rows: exists } = await conn.pool().query<{ ok: boolean }>("SELECT to_regclass('policy_set_bindings') IS NOT NULL AND to_regclass('policy_set_versions') IS NOT NULL AS ok");
  if (exists[0]?.ok !== true) throw new CliError("policy_set_bindings does not exist in this database: run pnpm db:migrate", ExitCode.config);
  const { rows } = await conn.pool().query<{ zone_id: string; policy_set_id: string; active_version_id: string; version: number | null; manifest_sha256: string | null }>(
    `SELECT b.zone_id, b.policy_set_id, b.active_version_id, v.version, v.manifest_sha256
       FROM policy_set_bindings b LEFT JOIN policy_set_versions v ON v.id = b.active_version_id
      WHERE b.active_version_id IS NOT NULL ${options.zone !== undefined ? "AND b.zone_id = $1" : ""}
      ORDER BY b.zone_id`,
    options.zone !== undefined ? [options.zone] : [],
  );
  const problems: string[] = [];
  const served = new Map<string, Map<string, string> | undefined>();
  await Promise.all(
    options.replicas.map(async (url) => {
      try {
        served.set(url, await replicaRevisions(url, conn.env.METRICS_BEARER));
      } catch (error) {
        served.set(url, undefined);
        problems.push(`replica ${url}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }),
  );
  const statuses = rows.map((r): ZonePolicyStatus => {
    const revisions: Record<string, string | null> = {};
    for (const url of options.replicas) revisions[url] = served.get(url)?.get(r.zone_id) ?? null;
    const readable = options.replicas.filter((u) => served.get(u) !== undefined).map((u) => revisions[u]);
    const agree = readable.every((v) => v !== null && v === readable[0]);
    if (!agree) problems.push(`zone ${r.zone_id}: replicas serve ${readable.map((v) => v ?? "no bundle").join(", ")}`);
    return { zone: r.zone_id, policySetId: r.policy_set_id, activeVersionId: r.active_version_id, version: r.version, manifestSha256: r.manifest_sha256, revisions, agree };
  });
  if (options.json) printJson(io, { zones: statuses, problems });
  else {
    if (statuses.length === 0) io.out("no zone has an active policy binding");
    else {
      const short = (v: string | null) => (v === null ? "-" : v.length > 16 ? `${v.slice(0, 16)}…` : v);
      io.out(
        renderTable(
          io,
          ["zone", "policy set", "active version", "v", ...options.replicas.map((u) => new URL(u).host), "agree"],
          statuses.map((s) => [s.zone, s.policySetId, s.activeVersionId, s.version ?? "", ...options.replicas.map((u) => short(s.revisions[u] ?? null)), s.agree ? "yes" : "NO"]),
        ),
      );
    }
    if (options.replicas.length === 0) io.out("no replicas given (--replica or POLICY_INVALIDATOR_URLS): database view only");
    for (const p of problems) io.err(p);
  }
  return { statuses, problems };
}
