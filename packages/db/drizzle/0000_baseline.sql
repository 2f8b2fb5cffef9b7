-- Adopts an upstream database in place (hand-edited from drizzle-kit output; see docs/decisions.md):
-- event_outbox, audit_events and audit_export_watermark are created only if absent; where upstream
-- created them, the columns this project needs are added and nothing is dropped or rewritten.
CREATE TABLE IF NOT EXISTS "event_outbox" (
	"id" text PRIMARY KEY NOT NULL,
	"stream_name" text NOT NULL,
	"payload_json" jsonb NOT NULL
);
--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "attempts" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "available_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "locked_until" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "locked_by" text;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "last_error" text;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "dispatched_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "request_id" text;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "created_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "audit_events" (
	"id" text PRIMARY KEY NOT NULL,
	"zone_id" text NOT NULL,
	"event_type" text NOT NULL,
	"actor_id" text,
	"resource_id" text,
	"decision" text NOT NULL,
	"evaluation_status" text NOT NULL,
	"request_id" text NOT NULL,
	"policy_set_id" text,
	"policy_set_version_id" text,
	"manifest_sha" text,
	"payload_json" jsonb NOT NULL,
	"determining_policies_json" jsonb NOT NULL,
	"diagnostics_json" jsonb NOT NULL,
	"metadata_json" jsonb,
	"hmac_chain" text NOT NULL,
	"tamper_detected" boolean DEFAULT false NOT NULL,
	"occurred_at" timestamp with time zone NOT NULL,
	"exported_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"chain_seq" bigint NOT NULL,
	"content_sha256" text NOT NULL,
	"ingested_at" timestamp with time zone DEFAULT now() NOT NULL,
	"sig" text,
	"producer_id" text,
	"producer_seq" bigint,
	"producer_prev" text,
	"stream_entry_id" text
);
--> statement-breakpoint
-- An upstream audit_events (partitioned by range of occurred_at, primary key (id, occurred_at), upstream's
-- chain in content_sha256/chain_hmac/chain_seq) is kept with every row and partition; this project's
-- columns are added, nullable where upstream rows have no value. Rows present at adoption read
-- exported_at = -infinity (a metadata-only default, then dropped): upstream's exporter owned them, so the
-- late-row export pass never re-exports them; hours after upstream's watermark are exported by the
-- hourly pass, which takes every row of an hour (see 0018_audit_adopt_upstream for the watermark and the
-- chain anchors).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('audit_events') AND relkind = 'p') THEN
    ALTER TABLE audit_events
      ADD COLUMN IF NOT EXISTS actor_id text,
      ADD COLUMN IF NOT EXISTS resource_id text,
      ADD COLUMN IF NOT EXISTS payload_json jsonb,
      ADD COLUMN IF NOT EXISTS hmac_chain text,
      ADD COLUMN IF NOT EXISTS tamper_detected boolean DEFAULT false NOT NULL,
      ADD COLUMN IF NOT EXISTS created_at timestamp with time zone DEFAULT now() NOT NULL,
      ADD COLUMN IF NOT EXISTS sig text,
      ADD COLUMN IF NOT EXISTS producer_id text,
      ADD COLUMN IF NOT EXISTS producer_seq bigint,
      ADD COLUMN IF NOT EXISTS producer_prev text,
      ADD COLUMN IF NOT EXISTS stream_entry_id text;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'audit_events' AND column_name = 'exported_at') THEN
      ALTER TABLE audit_events ADD COLUMN exported_at timestamp with time zone DEFAULT '-infinity';
      ALTER TABLE audit_events ALTER COLUMN exported_at DROP DEFAULT;
    END IF;
  END IF;
END
$$;
--> statement-breakpoint
CREATE TABLE "audit_events_dlq" (
	"id" text PRIMARY KEY NOT NULL,
	"stream_entry_id" text NOT NULL,
	"original_event_json" jsonb NOT NULL,
	"error" text NOT NULL,
	"attempts" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "audit_export_watermark" (
	"name" text PRIMARY KEY NOT NULL,
	"exported_through" timestamp with time zone,
	"fencing_token" bigint DEFAULT 0 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
-- upstream's watermark table (name, last_exported_hour, updated_at): this project's columns are added and
-- upstream's column may be left NULL by this project's rows
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'audit_export_watermark' AND column_name = 'last_exported_hour') THEN
    ALTER TABLE audit_export_watermark
      ADD COLUMN IF NOT EXISTS exported_through timestamp with time zone,
      ADD COLUMN IF NOT EXISTS fencing_token bigint DEFAULT 0 NOT NULL;
    ALTER TABLE audit_export_watermark ALTER COLUMN last_exported_hour DROP NOT NULL;
  END IF;
END
$$;
--> statement-breakpoint
CREATE TABLE "audit_tamper_alerts" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"zone_id" text NOT NULL,
	"event_id" text,
	"kind" text NOT NULL,
	"detail" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"detected_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
-- A partitioned table cannot hold a unique index without its partition key: on an adopted upstream table
-- the zone locks of the ledger writer alone keep chain_seq unique per zone.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('audit_events') AND relkind = 'r') THEN
    CREATE UNIQUE INDEX IF NOT EXISTS "audit_events_zone_chain_seq_uq" ON "audit_events" USING btree ("zone_id","chain_seq");
  END IF;
END
$$;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "audit_events_zone_occurred_idx" ON "audit_events" USING btree ("zone_id","occurred_at");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "audit_events_occurred_idx" ON "audit_events" USING btree ("occurred_at");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "audit_events_exported_idx" ON "audit_events" USING btree ("exported_at");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "audit_events_producer_idx" ON "audit_events" USING btree ("producer_id","zone_id","producer_seq");--> statement-breakpoint
CREATE INDEX "audit_tamper_alerts_zone_idx" ON "audit_tamper_alerts" USING btree ("zone_id","detected_at");