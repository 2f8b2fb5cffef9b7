-- Adoption of an upstream audit ledger (0000 added this project's columns to upstream's audit_events and
-- audit_export_watermark). Nothing happens on a database this project created (audit_events not
-- partitioned). See docs/decisions.md, "Adopting an upstream database".
CREATE TABLE IF NOT EXISTS "audit_adoptions" (
	"zone_id" text PRIMARY KEY NOT NULL,
	"adopted_through_seq" bigint NOT NULL,
	"rows_before" bigint NOT NULL,
	"adopted_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('audit_events') AND relkind = 'p') THEN
    -- This project's chain starts in each zone after the rows upstream ingested: the zone's anchor is the
    -- highest chain_seq present now, with the empty string as the link the next row hashes from. The
    -- writer continues chain_seq from there; verify and the sweeper check rows above the anchor only.
    INSERT INTO audit_adoptions (zone_id, adopted_through_seq, rows_before)
      SELECT zone_id, COALESCE(max(chain_seq), 0), count(*) FROM audit_events WHERE hmac_chain IS NULL GROUP BY zone_id
      ON CONFLICT (zone_id) DO NOTHING;
    INSERT INTO audit_chain_anchors (zone_id, chain_seq, hmac_chain, updated_at)
      SELECT zone_id, adopted_through_seq, '', now() FROM audit_adoptions
      ON CONFLICT (zone_id) DO NOTHING;
    -- The export goes on where upstream's stopped: upstream's watermark `parquet-hourly` holds the last
    -- hour it exported; this project's watermark (`s3`) holds the first hour not exported.
    INSERT INTO audit_export_watermark (name, exported_through, fencing_token, updated_at)
      SELECT 's3', max(last_exported_hour) + interval '1 hour', 0, now() FROM audit_export_watermark
       WHERE name = 'parquet-hourly' HAVING max(last_exported_hour) IS NOT NULL
      ON CONFLICT (name) DO NOTHING;
    -- Rows of a month without a partition need upstream's DEFAULT partition.
    IF NOT EXISTS (
      SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
       WHERE i.inhparent = 'audit_events'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
    ) THEN
      CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;
    END IF;
  END IF;
END
$$;
