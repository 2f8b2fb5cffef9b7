import { createHash } from "node:crypto";

import { enqueue } from "./enqueue.js";
import { PolicyActivationError } from "./errors.js";
import type { OutboxTx } from "./executor.js";
import { run } from "./executor.js";

/**
 * The manifest of a policy set version as upstream hashes it: the array re-serialised compactly with only
 * the `policy_version_id` key of each entry. Throws when it is not an array of such entries.
 */
export function canonicalManifest(manifest: unknown): { ids: string[]; text: string } {
  if (!Array.isArray(manifest)) throw new PolicyActivationError("manifest_invalid", "manifest_json is not an array");
  const ids = manifest.map((entry, i) => {
    const id = (entry as { policy_version_id?: unknown } | null)?.policy_version_id;
    if (typeof id !== "string" || id === "") throw new PolicyActivationError("manifest_invalid", `entry ${i} has no policy_version_id`);
    return id;
  });
  return { ids, text: JSON.stringify(ids.map((id) => ({ policy_version_id: id }))) };
}

/** Hex SHA-256 of the canonical manifest (`policy_set_versions.manifest_sha256`). */
export function manifestSha256(manifest: unknown): string {
  return createHash("sha256").update(canonicalManifest(manifest).text).digest("hex");
}

export interface ActivationResult {
  /** The outbox row that carries `caracal.policy.invalidate`. */
  outboxId: string;
  /** The version that was active before, if any (of any policy set of the zone). */
  previousVersionId: string | undefined;
}

/**
 * Makes `versionId` the zone's active version of `policySetId`, inside the caller's open transaction `tx`:
 * checks that the version belongs to the set and the set to the zone, that its `manifest_sha256` is the
 * hash of its manifest and that every policy version the manifest names exists (held FOR SHARE until
 * commit, so none can vanish under the activation); deactivates any other set of the zone (one active
 * binding per zone); points the binding at the version; and enqueues `caracal.policy.invalidate`
 * (`zone_id`, `policy_set_id`, `policy_set_version_id`, `shadow_version_id` empty: WIRE §5) through the
 * outbox. All of it commits or rolls back with the caller's transaction. Activations of one zone are
 * serialised by a transaction-scoped advisory lock on the zone id. Throws `PolicyActivationError` (nothing
 * changed) when a check fails; the caller should roll back.
 */
export async function activatePolicySetVersion(tx: OutboxTx, zoneId: string, policySetId: string, versionId: string): Promise<ActivationResult> {
  await run(tx, "SELECT pg_advisory_xact_lock(hashtext($1)::bigint)", [zoneId]);
  const [version] = await run(
    tx,
    `SELECT psv.manifest_json, psv.manifest_sha256
       FROM policy_set_versions psv
       JOIN policy_sets ps ON ps.id = psv.policy_set_id
      WHERE psv.id = $1 AND psv.policy_set_id = $2 AND ps.zone_id = $3 AND ps.archived_at IS NULL
      FOR SHARE OF ps`,
    [versionId, policySetId, zoneId],
  );
  if (version === undefined) throw new PolicyActivationError("version_not_found", `version ${versionId} of policy set ${policySetId} in zone ${zoneId}`);
  const { ids, text } = canonicalManifest(version.manifest_json);
  const sha = createHash("sha256").update(text).digest("hex");
  if (sha !== version.manifest_sha256) throw new PolicyActivationError("manifest_sha256_mismatch", `version ${versionId}: manifest hashes to ${sha}, manifest_sha256 says ${String(version.manifest_sha256)}`);
  const unique = [...new Set(ids)];
  if (unique.length > 0) {
    const found = await run(tx, "SELECT id FROM policy_versions WHERE id = ANY($1::text[]) FOR SHARE", [unique]);
    if (found.length !== unique.length) {
      const have = new Set(found.map((r) => String(r.id)));
      throw new PolicyActivationError("referenced_policy_version_missing", `missing: ${unique.filter((id) => !have.has(id)).join(", ")}`);
    }
  }
  const previous = await run(tx, "SELECT active_version_id FROM policy_set_bindings WHERE zone_id = $1 AND active_version_id IS NOT NULL", [zoneId]);
  await run(
    tx,
    `UPDATE policy_set_bindings SET active_version_id = NULL, updated_at = now()
      WHERE zone_id = $1 AND policy_set_id <> $2 AND active_version_id IS NOT NULL`,
    [zoneId, policySetId],
  );
  const updated = await run(
    tx,
    `UPDATE policy_set_bindings SET active_version_id = $1, updated_at = now()
      WHERE zone_id = $2 AND policy_set_id = $3 RETURNING zone_id`,
    [versionId, zoneId, policySetId],
  );
  if (updated.length === 0) throw new PolicyActivationError("policy_set_binding_not_found", `zone ${zoneId}, policy set ${policySetId}`);
  const outboxId = await enqueue(tx, "policyInvalidate", {
    zone_id: zoneId,
    policy_set_id: policySetId,
    policy_set_version_id: versionId,
    shadow_version_id: "",
  });
  const prev = previous[0]?.active_version_id;
  return { outboxId, previousVersionId: typeof prev === "string" ? prev : undefined };
}
