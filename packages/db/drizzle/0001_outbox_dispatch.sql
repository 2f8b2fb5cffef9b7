-- Dispatcher columns for event_outbox (hand-edited from drizzle-kit output; see docs/outbox.md).
-- Adoption-safe: IF NOT EXISTS everywhere, and the volatile defaults are set AFTER the columns are added,
-- so existing (upstream) rows keep NULL and the table is not rewritten.
CREATE SEQUENCE IF NOT EXISTS "public"."event_outbox_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "tx_id" "xid8";--> statement-breakpoint
ALTER TABLE "event_outbox" ALTER COLUMN "tx_id" SET DEFAULT pg_current_xact_id();--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "seq" bigint;--> statement-breakpoint
ALTER TABLE "event_outbox" ALTER COLUMN "seq" SET DEFAULT nextval('event_outbox_seq');--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "failed_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "event_outbox" ADD COLUMN IF NOT EXISTS "stream_entry_id" text;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "event_outbox_pending_idx" ON "event_outbox" USING btree (coalesce("tx_id", '0'::xid8),coalesce("seq", 0),"created_at","id") WHERE "event_outbox"."dispatched_at" IS NULL AND "event_outbox"."failed_at" IS NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "event_outbox_inflight_idx" ON "event_outbox" USING btree ("stream_name") WHERE "event_outbox"."dispatched_at" IS NULL AND "event_outbox"."failed_at" IS NULL AND ("event_outbox"."attempts" > 0 OR "event_outbox"."locked_until" IS NOT NULL);--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "event_outbox_dispatched_idx" ON "event_outbox" USING btree ("dispatched_at") WHERE "event_outbox"."dispatched_at" IS NOT NULL;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "event_outbox_failed_idx" ON "event_outbox" USING btree ("failed_at") WHERE "event_outbox"."failed_at" IS NOT NULL;
