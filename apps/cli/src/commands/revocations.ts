/**
 * `revocations list|check`: the revocation consumer's durable record (`session_revocations`) and the
 * upstream key layout it writes (`caracal:revoked:sessions:{anchor id}` = "1" with a TTL, no zone in the
 * key). `check` answers, for each anchor given, whether the table holds an unexpired revocation in the
 * zone and whether the Redis key an upstream resource server reads is there (with its remaining TTL), so
 * a missing key (a flush, an eviction) shows as a disagreement. Exit 1 when any anchor is revoked.
 */
import type { Connections } from "../config.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { formatAge, printJson, renderTable } from "../output.js";

/** The anchors of a revocation (WIRE §5) plus `edge_id`, which upstream's gateway reads as a delegation edge. */
export const CHECK_ANCHORS = ["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id", "edge_id"] as const;
export type CheckAnchor = (typeof CHECK_ANCHORS)[number];
const REVOKED_KEY_PREFIX = "caracal:revoked:sessions:";

async function requireTable(conn: Connections): Promise<void> {
  const { rows } = await conn.pool().query<{ ok: boolean }>("SELECT to_regclass('session_revocations') IS NOT NULL AS ok");
  if (rows[0]?.ok !== true) throw new CliError("session_revocations does not exist in this database: run pnpm db:migrate", ExitCode.config);
}

export interface RevocationRow {
  zoneId: string;
  anchorKind: string;
  anchorId: string;
  reason: string;
  grantId: string | null;
  revokedAt: string;
  expiresAt: string;
  sourceStreamId: string;
}

export async function revocationsList(conn: Connections, io: Io, options: { zone?: string; limit: number; all?: boolean; json?: boolean }): Promise<RevocationRow[]> {
  if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > 10_000) throw new CliError("--limit must be 1 to 10000", ExitCode.usage);
  await requireTable(conn);
  const conditions: string[] = [];
  const values: unknown[] = [];
  if (options.zone !== undefined) {
    values.push(options.zone);
    conditions.push(`zone_id = $${values.length}`);
  }
  if (options.all !== true) conditions.push("expires_at > now()");
  values.push(options.limit);
  const { rows } = await conn.pool().query<{
    zone_id: string;
    anchor_kind: string;
    anchor_id: string;
    reason: string;
    grant_id: string | null;
    revoked_at: Date;
    expires_at: Date;
    source_stream_id: string;
  }>(
    `SELECT zone_id, anchor_kind, anchor_id, reason, grant_id, revoked_at, expires_at, source_stream_id FROM session_revocations
      ${conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : ""} ORDER BY revoked_at DESC LIMIT $${values.length}`,
    values,
  );
  const out = rows.map((r) => ({
    zoneId: r.zone_id,
    anchorKind: r.anchor_kind,
    anchorId: r.anchor_id,
    reason: r.reason,
    grantId: r.grant_id,
    revokedAt: r.revoked_at.toISOString(),
    expiresAt: r.expires_at.toISOString(),
    sourceStreamId: r.source_stream_id,
  }));
  if (options.json) printJson(io, out);
  else if (out.length === 0) io.out(options.all ? "no revocations" : "no active revocations");
  else {
    const now = Date.now();
    io.out(
      renderTable(
        io,
        ["zone", "anchor", "id", "reason", "revoked", "expires in", "entry"],
        out.map((r) => [r.zoneId, r.anchorKind, r.anchorId, r.reason, r.revokedAt, formatAge((Date.parse(r.expiresAt) - now) / 1000), r.sourceStreamId]),
      ),
    );
  }
  return out;
}

export interface AnchorCheck {
  anchor: CheckAnchor;
  id: string;
  /** An unexpired revocation in the zone's durable record. */
  revoked: boolean;
  reason: string | null;
  expiresAt: string | null;
  /** The upstream key is present; its remaining TTL in ms (null: no TTL). */
  redisKey: boolean;
  redisTtlMs: number | null;
  /** Table and key agree (both present, or both absent). */
  agree: boolean;
}

/** Checks the anchors given; resolves with the answers (the caller sets exit 1 when any is revoked). */
export async function revocationsCheck(conn: Connections, io: Io, options: { zone: string; anchors: Partial<Record<CheckAnchor, string>>; json?: boolean }): Promise<AnchorCheck[]> {
  const given = CHECK_ANCHORS.filter((a) => options.anchors[a] !== undefined && options.anchors[a] !== "").map((a) => [a, options.anchors[a] as string] as const);
  if (given.length === 0) throw new CliError(`give at least one anchor: ${CHECK_ANCHORS.map((a) => `--${a.replaceAll("_", "-")}`).join(", ")}`, ExitCode.usage);
  await requireTable(conn);
  // edge_id is looked up as a delegation edge, as upstream's gateway does
  const kinds = given.map(([a]) => (a === "edge_id" ? "delegation_edge_id" : a));
  const { rows } = await conn.pool().query<{ anchor_kind: string; anchor_id: string; reason: string; expires_at: Date }>(
    `SELECT anchor_kind, anchor_id, reason, expires_at FROM session_revocations
      WHERE zone_id = $1 AND (anchor_kind, anchor_id) IN (SELECT * FROM unnest($2::text[], $3::text[])) AND expires_at > now()`,
    [options.zone, kinds, given.map(([, id]) => id)],
  );
  const redis = conn.redis();
  const pipeline = redis.pipeline();
  for (const [, id] of given) pipeline.pttl(`${conn.keyPrefix}${REVOKED_KEY_PREFIX}${id}`);
  const ttls = ((await pipeline.exec()) ?? []).map(([error, ttl]) => {
    if (error) throw error;
    return Number(ttl);
  });
  const checks = given.map(([anchor, id], i): AnchorCheck => {
    const row = rows.find((r) => r.anchor_kind === kinds[i] && r.anchor_id === id);
    const ttl = ttls[i] ?? -2;
    const redisKey = ttl !== -2;
    return {
      anchor,
      id,
      revoked: row !== undefined,
      reason: row?.reason ?? null,
      expiresAt: row?.expires_at.toISOString() ?? null,
      redisKey,
      redisTtlMs: ttl >= 0 ? ttl : null,
      agree: redisKey === (row !== undefined),
    };
  });
  if (options.json) printJson(io, { zone: options.zone, revoked: checks.some((c) => c.revoked), anchors: checks });
  else {
    io.out(
      renderTable(
        io,
        ["anchor", "id", "revoked", "reason", "expires", "redis key", "agree"],
        checks.map((c) => [c.anchor, c.id, c.revoked ? "yes" : "no", c.reason ?? "", c.expiresAt ?? "", c.redisKey ? `yes (ttl ${formatAge((c.redisTtlMs ?? 0) / 1000)})` : "no", c.agree ? "yes" : "NO"]),
      ),
    );
    io.out(checks.some((c) => c.revoked) ? "revoked: a mandate with these anchors must be refused" : "active: no anchor is revoked");
  }
  return checks;
}
