/**
 * Writes accepted revocations to PostgreSQL and Redis, one statement and one pipeline per batch.
 * The caller acks only after both resolved.
 */
import { anchorsOf, delegationEpochKey, entryIdMs, revokedKey } from "@caracal/revocation-cache";
import type { RedisClient, StreamMessage, TopicMessage } from "@caracal/streams-core";
import { CaracalError, isCluster, sendCommands, type CommandResult } from "@caracal/streams-core";
import { Command } from "ioredis";
import type pg from "pg";

/** A Redis write of a batch failed; transient (the batch is retried, then redelivered). */
export class RevocationRedisWriteError extends CaracalError {
  readonly code = "REVOCATION_REDIS_WRITE_FAILED";
  readonly permanent = false;
}

/**
 * Sends single-key commands back to back. One node: one pipelined write (`sendCommands`). A cluster: the
 * keys of a batch hash to different slots and nodes, which one ioredis pipeline refuses, so each command
 * is sent on its own without waiting for the previous reply: still one round trip per node, not per key.
 */
export async function sendPerKey(redis: RedisClient, commands: readonly Command[]): Promise<CommandResult[]> {
  if (!isCluster(redis)) return sendCommands(redis, commands);
  return Promise.all(
    commands.map((command) =>
      (redis.sendCommand(command) as Promise<unknown>).then(
        (reply): CommandResult => [null, reply],
        (error: unknown): CommandResult => [error instanceof Error ? error : new Error(String(error)), null],
      ),
    ),
  );
}

export interface RevocationRow {
  zoneId: string;
  anchorKind: string;
  anchorId: string;
  reason: string;
  grantId: string | null;
  revokedAtMs: number;
  expiresAtMs: number;
  sourceStreamId: string;
}

/**
 * One row per (zone, anchor kind, anchor id) present in the batch. `revoked_at` is the entry's stream
 * time and `expires_at` that plus `ttlMs`, so a redelivery computes the same row; the first entry of the
 * batch that names an anchor wins.
 */
export function revocationRows(messages: readonly StreamMessage<TopicMessage<"sessionsRevoke">>[], ttlMs: number): RevocationRow[] {
  const seen = new Set<string>();
  const rows: RevocationRow[] = [];
  for (const m of messages) {
    const at = entryIdMs(m.id);
    for (const [kind, id] of anchorsOf(m.body)) {
      const k = `${m.body.zone_id}\u0000${kind}\u0000${id}`;
      if (seen.has(k)) continue;
      seen.add(k);
      rows.push({ zoneId: m.body.zone_id, anchorKind: kind, anchorId: id, reason: m.body.reason, grantId: m.body.grant_id ?? null, revokedAtMs: at, expiresAtMs: at + ttlMs, sourceStreamId: m.id });
    }
  }
  return rows;
}

/**
 * Idempotent insert: a row that exists and has not expired is left as it is (a duplicate or redelivery
 * changes nothing); a row that has expired is replaced (a new revocation window). Returns, per input row,
 * the anchor id and the expiry in force after the statement, which the Redis key's PX is derived from.
 */
const UPSERT_SQL = `
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::double precision[], $7::double precision[], $8::text[])
    AS t(zone_id, anchor_kind, anchor_id, reason, grant_id, revoked_ms, expires_ms, source_stream_id)
), ins AS (
  INSERT INTO session_revocations (zone_id, anchor_kind, anchor_id, reason, grant_id, revoked_at, expires_at, source_stream_id)
  SELECT zone_id, anchor_kind, anchor_id, reason, grant_id, to_timestamp(revoked_ms / 1000.0), to_timestamp(expires_ms / 1000.0), source_stream_id FROM input
  ON CONFLICT (zone_id, anchor_kind, anchor_id) DO UPDATE
    SET reason = excluded.reason, grant_id = excluded.grant_id, revoked_at = excluded.revoked_at,
        expires_at = excluded.expires_at, source_stream_id = excluded.source_stream_id
    WHERE session_revocations.expires_at <= now()
  RETURNING zone_id, anchor_kind, anchor_id, expires_at
)
SELECT i.anchor_id, floor(extract(epoch FROM coalesce(ins.expires_at, s.expires_at)) * 1000)::double precision AS expires_ms
FROM input i
LEFT JOIN ins USING (zone_id, anchor_kind, anchor_id)
LEFT JOIN session_revocations s ON s.zone_id = i.zone_id AND s.anchor_kind = i.anchor_kind AND s.anchor_id = i.anchor_id`;

export async function upsertRevocations(pool: pg.Pool, rows: readonly RevocationRow[]): Promise<Array<{ anchorId: string; expiresAtMs: number }>> {
  if (rows.length === 0) return [];
  const result = await pool.query<{ anchor_id: string; expires_ms: number }>(UPSERT_SQL, [
    rows.map((r) => r.zoneId),
    rows.map((r) => r.anchorKind),
    rows.map((r) => r.anchorId),
    rows.map((r) => r.reason),
    rows.map((r) => r.grantId),
    rows.map((r) => r.revokedAtMs),
    rows.map((r) => r.expiresAtMs),
    rows.map((r) => r.sourceStreamId),
  ]);
  return result.rows.map((r) => ({ anchorId: r.anchor_id, expiresAtMs: Number(r.expires_ms) }));
}

/**
 * Sets `caracal:revoked:sessions:{id}` = "1" PX (remaining life) for each anchor, pipelined (on a cluster
 * the pipeline is routed per key slot). `nx` only writes missing keys (reconcile) and returns how many
 * were written. Anchors already expired are skipped. Throws when any write failed.
 */
export async function setRevokedKeys(
  redis: RedisClient,
  keyPrefix: string,
  keys: ReadonlyArray<{ anchorId: string; expiresAtMs: number }>,
  options: { nx?: boolean; now?: number } = {},
): Promise<number> {
  const now = options.now ?? Date.now();
  const commands: Command[] = [];
  for (const k of keys) {
    const px = Math.floor(k.expiresAtMs - now);
    if (px <= 0) continue;
    const args: Array<string | number> = [revokedKey(keyPrefix, k.anchorId), "1", "PX", px];
    if (options.nx === true) args.push("NX");
    commands.push(new Command("set", args, { replyEncoding: "utf8" }));
  }
  const results = await sendPerKey(redis, commands);
  let written = 0;
  for (const [error, reply] of results) {
    if (error !== null) throw new RevocationRedisWriteError("writing revoked-session keys failed", { cause: error });
    if (reply === "OK") written++;
  }
  return written;
}

/**
 * Raises a zone's epoch key only when the new value is greater, compared as decimal digit strings (no
 * precision limit), and sets it with a PX TTL as upstream's resource-server store does; a missing or
 * non-numeric current value reads as 0. KEYS[1] epoch key, ARGV[1] epoch, ARGV[2] TTL in ms.
 */
export const RAISE_EPOCH_SCRIPT = `
local function normalize(v)
  if not string.match(v, '^%d+$') then return '0' end
  v = string.gsub(v, '^0+', '')
  if v == '' then return '0' end
  return v
end
local current = normalize(redis.call('GET', KEYS[1]) or '0')
local candidate = normalize(ARGV[1])
if string.len(candidate) > string.len(current) or (string.len(candidate) == string.len(current) and candidate > current) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`;

/** Highest epoch per zone in a batch of `caracal.delegations.invalidate`. */
export function maxEpochs(messages: readonly StreamMessage<TopicMessage<"delegationsInvalidate">>[]): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const m of messages) {
    const epoch = BigInt(m.body.epoch);
    const current = out.get(m.body.zone_id);
    if (current === undefined || epoch > current) out.set(m.body.zone_id, epoch);
  }
  return out;
}

/** Raises the table's epochs (one statement); never lowers one. */
export async function raiseEpochsInTable(pool: pg.Pool, epochs: ReadonlyMap<string, bigint>): Promise<void> {
  if (epochs.size === 0) return;
  await pool.query(
    `INSERT INTO delegation_epochs (zone_id, epoch, updated_at)
     SELECT zone_id, epoch, now() FROM unnest($1::text[], $2::bigint[]) AS t(zone_id, epoch)
     ON CONFLICT (zone_id) DO UPDATE SET epoch = excluded.epoch, updated_at = now()
     WHERE excluded.epoch > delegation_epochs.epoch`,
    [[...epochs.keys()], [...epochs.values()].map(String)],
  );
}

/** Raises the Redis epoch keys (script calls sent back to back); never lowers one. */
export async function raiseEpochsInRedis(redis: RedisClient, keyPrefix: string, epochs: ReadonlyMap<string, bigint>, ttlMs: number): Promise<void> {
  const commands = [...epochs].map(([zone, epoch]) => new Command("eval", [RAISE_EPOCH_SCRIPT, 1, delegationEpochKey(keyPrefix, zone), epoch.toString(), ttlMs], { replyEncoding: "utf8" }));
  const results = await sendPerKey(redis, commands);
  for (const [error] of results) {
    if (error !== null) throw new RevocationRedisWriteError("raising delegation epoch keys failed", { cause: error });
  }
}
