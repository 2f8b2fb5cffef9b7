-- The audit tables of an upstream Caracal database, as upstream's baseline migration
-- (infra/postgres/migrations/0001_baseline.up.sql) leaves them: audit_events partitioned by month on
-- occurred_at with a DEFAULT partition and primary key (id, occurred_at), upstream's chain columns
-- (content_sha256, prev_content_sha256, chain_hmac, chain_seq), row-level security per zone, the
-- partition functions its retention worker calls, and the export watermark, alert and retention tables.
-- Role grants are left out (roles are cluster-wide). Used by the adoption tests only.

CREATE TABLE audit_events (
  id text NOT NULL,
  zone_id text NOT NULL,
  event_type text NOT NULL,
  request_id text,
  decision text,
  policy_set_id text,
  policy_set_version_id text,
  manifest_sha text,
  evaluation_status text,
  determining_policies_json jsonb,
  diagnostics_json jsonb,
  metadata_json jsonb,
  occurred_at timestamptz NOT NULL,
  ingested_at timestamptz NOT NULL DEFAULT now(),
  content_sha256 text,
  prev_content_sha256 text,
  chain_hmac text,
  chain_seq bigint,
  ingest_signature text
) PARTITION BY RANGE (occurred_at);

CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

ALTER TABLE ONLY audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id, occurred_at);
CREATE INDEX audit_events_zone_chain ON audit_events (zone_id, chain_seq DESC);
CREATE INDEX audit_events_zone_id_occurred_at_idx ON audit_events (zone_id, occurred_at DESC);
CREATE INDEX audit_events_request_id_idx ON audit_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_session_idx ON audit_events ((metadata_json ->> 'session_id')) WHERE metadata_json ? 'session_id';

CREATE TABLE audit_export_watermark (
  name text PRIMARY KEY,
  last_exported_hour timestamptz NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_ingest_alerts (
  id bigserial PRIMARY KEY,
  event_id text NOT NULL,
  zone_id text NOT NULL,
  kind text NOT NULL,
  detail text,
  observed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_retention (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  retention_days integer NOT NULL CHECK (retention_days >= 1),
  updated_at timestamptz NOT NULL DEFAULT now(),
  updated_by text
);

CREATE TABLE audit_chain_rehash (
  id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  completed_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY zone_isolation ON audit_events
  USING (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true))
  WITH CHECK (current_setting('caracal.zone_id', true) = '*' OR zone_id = current_setting('caracal.zone_id', true));

CREATE FUNCTION audit_partition_ensure(month date) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  first_day date := date_trunc('month', month)::date;
  next_first date := first_day + make_interval(months => 1);
BEGIN
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                 format('audit_events_y%sm%s', to_char(first_day, 'YYYY'), to_char(first_day, 'MM')), first_day, next_first);
END
$$;

CREATE FUNCTION audit_partition_drop(part_name text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF part_name !~ '^audit_events_y[0-9]{4}m[0-9]{2}$' THEN
    RAISE EXCEPTION 'not an audit_events monthly partition: %', part_name;
  END IF;
  EXECUTE format('DROP TABLE IF EXISTS %I', part_name);
END
$$;
