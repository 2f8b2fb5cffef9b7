/**
 * Each zone's public verification keys, cached per zone and dropped on `caracal.keys.invalidate` (the zone
 * is reloaded at once). Same rules as bundles: a failed reload keeps the keys already held (fail-open for
 * updates); a zone never loaded that fails to load has none (fail-closed: nothing verifies). Served as a
 * JWKS with a strong ETag over its bytes.
 */
import { createHash } from "node:crypto";

import type { Logger } from "pino";
import type pg from "pg";

export interface ZoneKeys {
  readonly zoneId: string;
  readonly jwks: { keys: Array<Record<string, unknown>> };
  readonly body: string;
  readonly etag: string;
}

/** Reads a zone's current public keys (JWKs with `kid` and `alg`); throws when the store is unreachable. */
export type ZoneKeyLoader = (zoneId: string) => Promise<Array<{ kid: string; alg: string; public_jwk: Record<string, unknown> }>>;

/** The default loader: `zone_public_keys` (migration 0015), keys not past `not_after`, newest first. */
export function tableKeyLoader(pool: pg.Pool): ZoneKeyLoader {
  return async (zoneId) =>
    (
      await pool.query<{ kid: string; alg: string; public_jwk: Record<string, unknown> }>(
        `SELECT kid, alg, public_jwk FROM zone_public_keys
          WHERE zone_id = $1 AND (not_after IS NULL OR not_after > now()) ORDER BY created_at DESC, kid`,
        [zoneId],
      )
    ).rows;
}

export class ZoneKeyCache {
  private readonly zones = new Map<string, ZoneKeys>();
  private readonly loading = new Map<string, Promise<ZoneKeys | undefined>>();
  private readonly loader: ZoneKeyLoader;
  /** Loads done (successful or not), per zone: lets a caller see that only one zone was reloaded. */
  readonly loads = new Map<string, number>();

  constructor(private readonly o: { pool: pg.Pool; logger: Logger; onReloadFailed?: () => void; load?: ZoneKeyLoader }) {
    this.loader = o.load ?? tableKeyLoader(o.pool);
  }

  /** The zone's keys, loaded on first use; undefined when the zone has none (or never loaded). */
  async get(zoneId: string): Promise<ZoneKeys | undefined> {
    return this.zones.get(zoneId) ?? (await this.load(zoneId));
  }

  /** Drops the zone's entry and reloads it (`caracal.keys.invalidate`). */
  async invalidate(zoneId: string): Promise<void> {
    await this.load(zoneId);
  }

  /** Zones held (for a reconcile). */
  held(): string[] {
    return [...this.zones.keys()];
  }

  private load(zoneId: string): Promise<ZoneKeys | undefined> {
    const running = this.loading.get(zoneId);
    if (running !== undefined) return running;
    const p = (async () => {
      this.loads.set(zoneId, (this.loads.get(zoneId) ?? 0) + 1);
      try {
        const rows = await this.loader(zoneId);
        if (rows.length === 0) {
          this.zones.delete(zoneId);
          return undefined;
        }
        const jwks = { keys: rows.map((r) => ({ ...r.public_jwk, kid: r.kid, alg: r.alg, use: "sig" })) };
        const body = JSON.stringify(jwks);
        const keys: ZoneKeys = { zoneId, jwks, body, etag: `"${createHash("sha256").update(body).digest("hex").slice(0, 32)}"` };
        this.zones.set(zoneId, keys);
        return keys;
      } catch (error) {
        this.o.onReloadFailed?.();
        this.o.logger.warn({ zone: zoneId, err: error instanceof Error ? error.message : String(error) }, "zone keys reload failed: the keys held keep serving");
        return this.zones.get(zoneId);
      } finally {
        this.loading.delete(zoneId);
      }
    })();
    this.loading.set(zoneId, p);
    return p;
  }
}
