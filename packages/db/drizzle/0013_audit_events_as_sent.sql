-- Audit events are stored as upstream producers send them (WIRE §6): only id, zone_id and occurred_at are
-- required, so the columns derived from other fields may be NULL (a value of another JSON type stays in
-- payload_json). Upstream's own audit_events has these columns nullable too.
ALTER TABLE "audit_events" ALTER COLUMN "event_type" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_events" ALTER COLUMN "decision" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_events" ALTER COLUMN "evaluation_status" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_events" ALTER COLUMN "request_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_events" ALTER COLUMN "determining_policies_json" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "audit_events" ALTER COLUMN "diagnostics_json" DROP NOT NULL;--> statement-breakpoint
-- The verifier compares occurred_at with the payload's text parsed exactly as the ingest parsed it; a
-- payload changed to text PostgreSQL cannot parse must read as "differs", not fail the whole verification.
CREATE OR REPLACE FUNCTION caracal_try_timestamptz(p_text text) RETURNS timestamptz
  LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN p_text::timestamptz;
EXCEPTION WHEN others THEN
  RETURN NULL;
END
$$;
