CREATE TABLE IF NOT EXISTS "session_revocations" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"zone_id" text NOT NULL,
	"anchor_kind" text NOT NULL,
	"anchor_id" text NOT NULL,
	"reason" text NOT NULL,
	"grant_id" text,
	"revoked_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"source_stream_id" text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "session_revocations_anchor_uq" ON "session_revocations" USING btree ("zone_id","anchor_kind","anchor_id");--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "session_revocations_expires_idx" ON "session_revocations" USING btree ("expires_at");--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "delegation_epochs" (
	"zone_id" text PRIMARY KEY NOT NULL,
	"epoch" bigint NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
