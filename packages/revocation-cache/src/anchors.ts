/**
 * Revocation anchors: the fields of `caracal.sessions.revoke` that name what is revoked (WIRE §5), and
 * the upstream Redis key layout readers use.
 */

/** The anchor fields of a revocation, in the order upstream writes their keys. */
export const REVOCATION_ANCHORS = ["session_id", "sid", "root_sid", "agent_session_id", "delegation_edge_id"] as const;
export type RevocationAnchor = (typeof REVOCATION_ANCHORS)[number];

/**
 * Names a caller may check: the five anchors plus `edge_id`, which upstream's gateway accepts as a
 * delegation anchor (it is looked up like `delegation_edge_id`).
 */
export const CHECKABLE_ANCHORS = [...REVOCATION_ANCHORS, "edge_id"] as const;
export type CheckableAnchor = (typeof CHECKABLE_ANCHORS)[number];

/** A mandate's anchors; absent, empty and the literal "null" all mean absent. */
export type AnchorValues = Partial<Record<CheckableAnchor, string | null | undefined>>;

/** Prefix of the per-anchor key: `caracal:revoked:sessions:{anchor id}` = "1" with a PX TTL. */
export const REVOKED_KEY_PREFIX = "caracal:revoked:sessions:";
/** Prefix of a zone's delegation epoch key, only ever raised. */
export const DELEGATION_EPOCH_KEY_PREFIX = "caracal:revoked:sessions:delegation-epoch:";

/**
 * The Redis key of a revoked anchor. `keyPrefix` is CARACAL_KEY_PREFIX: empty in production, so the key
 * is exactly upstream's; tests set it for isolation.
 */
export function revokedKey(keyPrefix: string, anchorId: string): string {
  return `${keyPrefix}${REVOKED_KEY_PREFIX}${anchorId}`;
}

export function delegationEpochKey(keyPrefix: string, zoneId: string): string {
  return `${keyPrefix}${DELEGATION_EPOCH_KEY_PREFIX}${zoneId}`;
}

export function isCheckableAnchor(name: string): name is CheckableAnchor {
  return (CHECKABLE_ANCHORS as readonly string[]).includes(name);
}

/** A present anchor id: not undefined, not null, not empty, not the literal "null". */
export function presentId(value: string | null | undefined): value is string {
  return value !== undefined && value !== null && value !== "" && value !== "null";
}

/** The [kind, id] pairs of a revocation message's present anchors (`edge_id` read as delegation_edge_id). */
export function anchorsOf(values: AnchorValues): Array<[RevocationAnchor, string]> {
  const out: Array<[RevocationAnchor, string]> = [];
  for (const kind of REVOCATION_ANCHORS) {
    const id = values[kind];
    if (presentId(id)) out.push([kind, id]);
  }
  const edge = values.edge_id;
  if (presentId(edge) && edge !== values.delegation_edge_id) out.push(["delegation_edge_id", edge]);
  return out;
}

/** Milliseconds since the epoch encoded in a stream entry id (`<ms>-<seq>`). */
export function entryIdMs(id: string): number {
  const dash = id.indexOf("-");
  const ms = Number(dash < 0 ? id : id.slice(0, dash));
  return Number.isFinite(ms) ? ms : Date.now();
}
