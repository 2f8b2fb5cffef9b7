import type { RedisClient } from "@caracal/streams-core";
import type pg from "pg";

import { raiseEpochsInRedis, setRevokedKeys } from "./writer.js";

/**
 * One pass: every active row of `session_revocations` whose key is missing from Redis (a flush, a
 * failover that lost writes, an eviction) is rewritten with its remaining life (`SET ... PX NX`, so a
 * present key is never touched), page by page in id order; then every zone's epoch key is raised to the
 * table's. Returns the number of keys written.
 */
export async function reconcileOnce(pool: pg.Pool, redis: RedisClient, keyPrefix: string, pageRows: number, ttlMs: number, signal?: AbortSignal): Promise<number> {
  let after = 0;
  let repaired = 0;
  for (;;) {
    if (signal?.aborted === true) return repaired;
    const page = await pool.query<{ id: string; anchor_id: string; expires_ms: number }>(
      `SELECT id, anchor_id, floor(extract(epoch FROM expires_at) * 1000)::double precision AS expires_ms
       FROM session_revocations WHERE id > $1 AND expires_at > now() ORDER BY id LIMIT $2`,
      [after, pageRows],
    );
    if (page.rows.length === 0) break;
    repaired += await setRevokedKeys(redis, keyPrefix, page.rows.map((r) => ({ anchorId: r.anchor_id, expiresAtMs: Number(r.expires_ms) })), { nx: true });
    after = Number(page.rows[page.rows.length - 1]!.id);
    if (page.rows.length < pageRows) break;
  }
  const epochs = await pool.query<{ zone_id: string; epoch: string }>("SELECT zone_id, epoch::text AS epoch FROM delegation_epochs");
  await raiseEpochsInRedis(redis, keyPrefix, new Map(epochs.rows.map((r) => [r.zone_id, BigInt(r.epoch)])), ttlMs);
  return repaired;
}
