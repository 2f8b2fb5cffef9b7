-- Adopts an upstream event_outbox in place: created only if absent, missing columns added, nothing
-- dropped or rewritten (hand-edited from drizzle-kit output; see docs/decisions.md).
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
CREATE TABLE "audit_events" (
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
CREATE TABLE "audit_events_dlq" (
	"id" text PRIMARY KEY NOT NULL,
	"stream_entry_id" text NOT NULL,
	"original_event_json" jsonb NOT NULL,
	"error" text NOT NULL,
	"attempts" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "audit_export_watermark" (
	"name" text PRIMARY KEY NOT NULL,
	"exported_through" timestamp with time zone,
	"fencing_token" bigint DEFAULT 0 NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
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
CREATE UNIQUE INDEX "audit_events_zone_chain_seq_uq" ON "audit_events" USING btree ("zone_id","chain_seq");--> statement-breakpoint
CREATE INDEX "audit_events_zone_occurred_idx" ON "audit_events" USING btree ("zone_id","occurred_at");--> statement-breakpoint
CREATE INDEX "audit_events_occurred_idx" ON "audit_events" USING btree ("occurred_at");--> statement-breakpoint
CREATE INDEX "audit_events_exported_idx" ON "audit_events" USING btree ("exported_at");--> statement-breakpoint
CREATE INDEX "audit_events_producer_idx" ON "audit_events" USING btree ("producer_id","zone_id","producer_seq");--> statement-breakpoint
CREATE INDEX "audit_tamper_alerts_zone_idx" ON "audit_tamper_alerts" USING btree ("zone_id","detected_at");