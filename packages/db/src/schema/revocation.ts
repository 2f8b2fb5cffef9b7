import { sql } from "drizzle-orm";
import { bigint, bigserial, index, pgTable, text, timestamptz, uniqueIndex } from "./columns.js";

/**
 * Durable truth of session revocations (`caracal.sessions.revoke`): one row per (zone, anchor kind,
 * anchor id). Idempotent: a redelivered or duplicated revocation inserts nothing and changes nothing
 * (`ON CONFLICT DO NOTHING`), so `revoked_at` is the first time the anchor was revoked and `expires_at`
 * is the first deadline. A revocation of an anchor whose row has already expired starts a new window
 * (the row is rewritten only when `expires_at <= now()`). Seeds the revocation caches and the reconcile
 * loop that rewrites Redis keys (`caracal:revoked:sessions:{anchor id}`).
 */
export const sessionRevocations = pgTable(
  "session_revocations",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    zoneId: text("zone_id").notNull(),
    /** One of session_id, sid, root_sid, agent_session_id, delegation_edge_id. */
    anchorKind: text("anchor_kind").notNull(),
    anchorId: text("anchor_id").notNull(),
    reason: text("reason").notNull(),
    grantId: text("grant_id"),
    revokedAt: timestamptz("revoked_at").notNull().default(sql`now()`),
    expiresAt: timestamptz("expires_at").notNull(),
    /** Stream entry id of the revocation that created the row. */
    sourceStreamId: text("source_stream_id").notNull(),
  },
  (t) => [
    uniqueIndex("session_revocations_anchor_uq").on(t.zoneId, t.anchorKind, t.anchorId),
    // The seed and reconcile read active rows only: `WHERE expires_at > now()`.
    index("session_revocations_expires_idx").on(t.expiresAt),
  ],
);

/**
 * A zone's delegation epoch (`caracal.delegations.invalidate`), only ever raised:
 * `ON CONFLICT DO UPDATE ... WHERE excluded.epoch > delegation_epochs.epoch`.
 */
export const delegationEpochs = pgTable("delegation_epochs", {
  zoneId: text("zone_id").primaryKey(),
  epoch: bigint("epoch", { mode: "bigint" }).notNull(),
  updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
});
