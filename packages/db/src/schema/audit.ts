import { sql } from "drizzle-orm";
import { bigint, bigserial, boolean, index, integer, jsonb, pgTable, text, timestamptz, uniqueIndex } from "./columns.js";

/**
 * The audit ledger (seed 002 "Database schema" plus WIRE §7). Written only by the audit ingestor.
 * `chain_seq` is 1, 2, 3, ... per zone in ingest order; `hmac_chain` links every row to the previous
 * one of its zone, so a changed, inserted or deleted row breaks every later link.
 */
export const auditEvents = pgTable(
  "audit_events",
  {
    id: text("id").primaryKey(),
    zoneId: text("zone_id").notNull(),
    eventType: text("event_type"),
    actorId: text("actor_id"),
    resourceId: text("resource_id"),
    decision: text("decision"),
    evaluationStatus: text("evaluation_status"),
    requestId: text("request_id"),
    policySetId: text("policy_set_id"),
    policySetVersionId: text("policy_set_version_id"),
    manifestSha: text("manifest_sha"),
    payloadJson: jsonb("payload_json").notNull(),
    determiningPoliciesJson: jsonb("determining_policies_json"),
    diagnosticsJson: jsonb("diagnostics_json"),
    metadataJson: jsonb("metadata_json"),
    hmacChain: text("hmac_chain").notNull(),
    tamperDetected: boolean("tamper_detected").notNull().default(false),
    occurredAt: timestamptz("occurred_at").notNull(),
    exportedAt: timestamptz("exported_at"),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    chainSeq: bigint("chain_seq", { mode: "number" }).notNull(),
    contentSha256: text("content_sha256").notNull(),
    ingestedAt: timestamptz("ingested_at").notNull().default(sql`now()`),
    /** `sig` of the frame (HMAC of the data bytes), kept to check producer-chain `prev` links. */
    sig: text("sig"),
    producerId: text("producer_id"),
    producerSeq: bigint("producer_seq", { mode: "number" }),
    producerPrev: text("producer_prev"),
    streamEntryId: text("stream_entry_id"),
  },
  (t) => [
    uniqueIndex("audit_events_zone_chain_seq_uq").on(t.zoneId, t.chainSeq),
    index("audit_events_zone_occurred_idx").on(t.zoneId, t.occurredAt),
    index("audit_events_occurred_idx").on(t.occurredAt),
    index("audit_events_exported_idx").on(t.exportedAt),
    /** Export's late-row probe (rows below the watermark not yet exported): only unexported rows, so it stays small. */
    index("audit_events_unexported_idx").on(t.occurredAt).where(sql`exported_at IS NULL`),
    index("audit_events_producer_idx").on(t.producerId, t.zoneId, t.producerSeq),
  ],
);

/** Entries that exhausted AUDIT_MAX_DELIVERIES (seed schema). */
export const auditEventsDlq = pgTable("audit_events_dlq", {
  id: text("id").primaryKey(),
  streamEntryId: text("stream_entry_id").notNull(),
  originalEventJson: jsonb("original_event_json").notNull(),
  error: text("error").notNull(),
  attempts: integer("attempts").notNull(),
  createdAt: timestamptz("created_at").notNull().default(sql`now()`),
});

/** One row per detected break: changed, inserted or deleted row, fork, broken link, gap, replay tampering. */
export const auditTamperAlerts = pgTable(
  "audit_tamper_alerts",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    zoneId: text("zone_id").notNull(),
    eventId: text("event_id"),
    kind: text("kind").notNull(),
    detail: jsonb("detail").notNull().default(sql`'{}'::jsonb`),
    detectedAt: timestamptz("detected_at").notNull().default(sql`now()`),
  },
  (t) => [index("audit_tamper_alerts_zone_idx").on(t.zoneId, t.detectedAt)],
);

/** Export progress: the hours of `occurred_at` exported so far, and the fencing token that advanced it. */
export const auditExportWatermark = pgTable("audit_export_watermark", {
  name: text("name").primaryKey(),
  exportedThrough: timestamptz("exported_through"),
  fencingToken: bigint("fencing_token", { mode: "number" }).notNull().default(0),
  updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
});
