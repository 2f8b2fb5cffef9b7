import { sql } from "drizzle-orm";
import { bigint, pgTable, text, timestamptz } from "./columns.js";

/**
 * Where each zone's ledger chain starts after retention deleted its oldest rows: the `chain_seq` and
 * `hmac_chain` of the last deleted row. Retention deletes only a prefix of a zone's chain, so the first
 * remaining row has `chain_seq` = anchor + 1 and its `hmac_chain` = HMAC(key, anchor.hmac_chain ||
 * content_sha256); a verifier starts from the anchor instead of the empty string. Written by retention
 * in the same statement as the delete; only ever moves forward.
 */
export const auditChainAnchors = pgTable("audit_chain_anchors", {
  zoneId: text("zone_id").primaryKey(),
  chainSeq: bigint("chain_seq", { mode: "number" }).notNull(),
  hmacChain: text("hmac_chain").notNull(),
  updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
});

/**
 * Zones of an adopted upstream database (migration 0018): rows up to `adopted_through_seq` were ingested
 * by upstream and are kept as they were; this project's chain starts after them (the zone's first
 * audit_chain_anchors row). `rows_before`: how many rows the zone held at adoption.
 */
export const auditAdoptions = pgTable("audit_adoptions", {
  zoneId: text("zone_id").primaryKey(),
  adoptedThroughSeq: bigint("adopted_through_seq", { mode: "number" }).notNull(),
  rowsBefore: bigint("rows_before", { mode: "number" }).notNull(),
  adoptedAt: timestamptz("adopted_at").notNull().default(sql`now()`),
});
