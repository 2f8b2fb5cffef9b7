/**
 * Rebuilds a zone's bundle from its active policy set version in PostgreSQL (upstream's tables) and swaps
 * it into the store. Rules (seed 001, `caracal.policy.invalidate`): the old bundle serves until the new
 * one is ready and stays when a build fails (fail-open for updates); with no bundle yet, a failed build,
 * or no active binding, the zone gets the deny-all bundle (fail-closed). An invalidation whose version
 * and manifest hash are those of the bundle already served builds nothing (the same message twice, or
 * every replica's reconcile). Builds of one zone never overlap: a request during a build runs once more
 * after it.
 */
import { createHash } from "node:crypto";

import type { Logger } from "pino";
import type pg from "pg";

import type { Bundle, BundleSigner } from "./bundle.js";
import { BundleBuildError, buildBundle, buildDenyAllBundle } from "./bundle.js";
import type { PolicyMetrics } from "./metrics.js";
import type { BundleStore } from "./store.js";

interface ZoneState {
  running: Promise<void> | undefined;
  again: boolean;
}

export interface BundlerOptions {
  pool: pg.Pool;
  store: BundleStore;
  logger: Logger;
  metrics: PolicyMetrics;
  signer?: BundleSigner | undefined;
}

export class ZoneBundler {
  private readonly zones = new Map<string, ZoneState>();

  constructor(private readonly o: BundlerOptions) {}

  /** Rebuilds `zoneId` (coalesced with a build under way); resolves when the zone is current. */
  refresh(zoneId: string): Promise<void> {
    let state = this.zones.get(zoneId);
    if (state === undefined) this.zones.set(zoneId, (state = { running: undefined, again: false }));
    if (state.running !== undefined) {
      state.again = true;
      return state.running;
    }
    const s = state;
    s.running = (async () => {
      do {
        s.again = false;
        await this.build(zoneId);
      } while (s.again);
    })().finally(() => {
      s.running = undefined;
    });
    return s.running;
  }

  /** Every zone with an active binding, and every zone already served (a binding may have gone). */
  async reconcile(): Promise<void> {
    const { rows } = await this.o.pool.query<{ zone_id: string }>("SELECT DISTINCT zone_id FROM policy_set_bindings WHERE active_version_id IS NOT NULL");
    const zones = new Set([...rows.map((r) => r.zone_id), ...this.o.store.zones()]);
    await Promise.all([...zones].map((z) => this.refresh(z)));
  }

  /** Zones with an active binding that have no bundle yet (readiness). */
  async unservedBoundZones(): Promise<string[]> {
    const { rows } = await this.o.pool.query<{ zone_id: string }>("SELECT DISTINCT zone_id FROM policy_set_bindings WHERE active_version_id IS NOT NULL");
    return rows.map((r) => r.zone_id).filter((z) => this.o.store.get(z) === undefined);
  }

  private async build(zoneId: string): Promise<void> {
    const { store, logger, metrics } = this.o;
    const current = store.get(zoneId);
    let binding: { policy_set_id: string; version_id: string; manifest_json: unknown; manifest_sha256: string } | undefined;
    try {
      const { rows } = await this.o.pool.query(
        `SELECT b.policy_set_id, psv.id AS version_id, psv.manifest_json, psv.manifest_sha256
           FROM policy_set_bindings b JOIN policy_set_versions psv ON psv.id = b.active_version_id
          WHERE b.zone_id = $1 AND b.active_version_id IS NOT NULL LIMIT 1`,
        [zoneId],
      );
      binding = rows[0];
    } catch (error) {
      this.failed(zoneId, "database_error", error, current);
      return;
    }
    if (binding === undefined) {
      if (current?.denyAll !== true) {
        const known = await this.zoneExists(zoneId);
        if (!known && current === undefined) {
          // an invalidation or a request naming no zone: counted, nothing cached for it
          metrics.unknownZones.inc();
          logger.warn({ zone: zoneId }, "unknown zone: no bundle");
          return;
        }
        logger.info({ zone: zoneId, known }, "zone has no active policy set version: deny-all");
        await this.install(await buildDenyAllBundle(zoneId, this.o.signer), true);
      }
      return;
    }
    if (current !== undefined && !current.denyAll && current.policySetVersionId === binding.version_id && current.manifestSha256 === binding.manifest_sha256) {
      metrics.dedupedBuilds.inc();
      return;
    }
    const started = performance.now();
    try {
      const ids = manifestIds(binding.manifest_json);
      const sha = createHash("sha256").update(JSON.stringify(ids.map((id) => ({ policy_version_id: id })))).digest("hex");
      if (sha !== binding.manifest_sha256) {
        throw new BundleBuildError("manifest_sha256_mismatch", `zone ${zoneId}: version ${binding.version_id} manifest hashes to ${sha}, manifest_sha256 says ${binding.manifest_sha256}`);
      }
      const { rows } = await this.o.pool.query<{ id: string; content: string }>("SELECT id, content FROM policy_versions WHERE id = ANY($1::text[])", [ids]);
      const byId = new Map(rows.map((r) => [r.id, r.content]));
      const missing = ids.filter((id) => !byId.has(id));
      if (missing.length > 0) throw new BundleBuildError("policy_version_missing", `zone ${zoneId}: version ${binding.version_id} names missing policy versions ${missing.join(", ")}`);
      const bundle = await buildBundle(
        { zoneId, policySetId: binding.policy_set_id, policySetVersionId: binding.version_id, manifestSha256: binding.manifest_sha256, modules: ids.map((id) => ({ id, content: byId.get(id)! })) },
        this.o.signer,
      );
      metrics.buildSeconds.observe((performance.now() - started) / 1000);
      await this.install(bundle, false);
    } catch (error) {
      this.failed(zoneId, error instanceof BundleBuildError ? error.reason : "database_error", error, current);
      if (current === undefined) await this.install(await buildDenyAllBundle(zoneId, this.o.signer), true);
    }
  }

  private async install(bundle: Bundle, denyAll: boolean): Promise<void> {
    const before = this.o.store.get(bundle.zoneId);
    this.o.store.put(bundle);
    this.o.metrics.builds.inc();
    if (denyAll) this.o.metrics.denyAllFallbacks.inc();
    if (before !== undefined && before.revision !== bundle.revision) this.o.metrics.revisionInfo.remove({ zone: bundle.zoneId, revision: before.revision });
    this.o.metrics.revisionInfo.set({ zone: bundle.zoneId, revision: bundle.revision }, 1);
    this.o.logger.info({ zone: bundle.zoneId, revision: bundle.revision, modules: bundle.modules, bytes: bundle.bytes.length }, "bundle installed");
  }

  private failed(zoneId: string, reason: string, error: unknown, current: Bundle | undefined): void {
    this.o.metrics.buildFailures.inc({ reason });
    this.o.logger.warn(
      { zone: zoneId, reason, err: error instanceof Error ? error.message : String(error), keeps: current?.revision ?? "deny-all" },
      current === undefined ? "bundle build failed with no bundle yet: deny-all (fail-closed)" : "bundle build failed: the previous bundle keeps serving (fail-open)",
    );
  }

  private async zoneExists(zoneId: string): Promise<boolean> {
    try {
      return ((await this.o.pool.query("SELECT 1 FROM zones WHERE id = $1", [zoneId])).rowCount ?? 0) > 0;
    } catch {
      return true;
    }
  }
}

function manifestIds(manifest: unknown): string[] {
  if (!Array.isArray(manifest)) throw new BundleBuildError("manifest_invalid", "manifest_json is not an array");
  return manifest.map((entry, i) => {
    const id = (entry as { policy_version_id?: unknown } | null)?.policy_version_id;
    if (typeof id !== "string" || id === "") throw new BundleBuildError("manifest_invalid", `manifest entry ${i} has no policy_version_id`);
    return id;
  });
}
