-- Upstream Caracal's policy tables (zones, policies, policy_versions, policy_sets, policy_set_versions,
-- policy_set_bindings), column for column, created only where missing: an upstream database is adopted
-- as it is, nothing dropped or altered. Constraints and indexes carry upstream's names and are added only
-- with their table. Plus this project's zone_public_keys (served as each zone's JWKS).
CREATE TABLE IF NOT EXISTS zones (
  id text NOT NULL CONSTRAINT zones_pkey PRIMARY KEY,
  name text NOT NULL,
  slug text NOT NULL CONSTRAINT zones_slug_key UNIQUE,
  dcr_enabled boolean DEFAULT false NOT NULL,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  updated_at timestamp with time zone DEFAULT now() NOT NULL,
  archived_at timestamp with time zone,
  owner_account_id text,
  operator_coauthor_badge boolean DEFAULT true NOT NULL,
  operator_governed boolean DEFAULT false NOT NULL,
  created_by text,
  created_via_operator boolean DEFAULT false NOT NULL,
  updated_by text,
  updated_via_operator boolean DEFAULT false NOT NULL
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS zones_active_idx ON zones USING btree (id) WHERE (archived_at IS NULL);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS policies (
  id text NOT NULL CONSTRAINT policies_pkey PRIMARY KEY,
  zone_id text NOT NULL CONSTRAINT policies_zone_id_fkey REFERENCES zones(id),
  name text NOT NULL,
  description text,
  archived_at timestamp with time zone,
  created_by text NOT NULL,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  updated_at timestamp with time zone DEFAULT now() NOT NULL,
  created_via_operator boolean DEFAULT false NOT NULL,
  updated_by text,
  updated_via_operator boolean DEFAULT false NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS policies_zone_id_name_key ON policies USING btree (zone_id, name) WHERE (archived_at IS NULL);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS policy_versions (
  id text NOT NULL CONSTRAINT policy_versions_pkey PRIMARY KEY,
  policy_id text NOT NULL CONSTRAINT policy_versions_policy_id_fkey REFERENCES policies(id),
  version integer NOT NULL,
  content text NOT NULL,
  content_sha256 text NOT NULL,
  schema_version text NOT NULL,
  created_by text NOT NULL,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  archived_at timestamp with time zone,
  created_via_operator boolean DEFAULT false NOT NULL,
  CONSTRAINT policy_versions_policy_id_version_key UNIQUE (policy_id, version)
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS policy_sets (
  id text NOT NULL CONSTRAINT policy_sets_pkey PRIMARY KEY,
  zone_id text NOT NULL CONSTRAINT policy_sets_zone_id_fkey REFERENCES zones(id),
  name text NOT NULL,
  description text,
  archived_at timestamp with time zone,
  created_by text NOT NULL,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  updated_at timestamp with time zone DEFAULT now() NOT NULL,
  created_via_operator boolean DEFAULT false NOT NULL,
  updated_by text,
  updated_via_operator boolean DEFAULT false NOT NULL
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS policy_set_versions (
  id text NOT NULL CONSTRAINT policy_set_versions_pkey PRIMARY KEY,
  policy_set_id text NOT NULL CONSTRAINT policy_set_versions_policy_set_id_fkey REFERENCES policy_sets(id),
  version integer NOT NULL,
  manifest_json jsonb NOT NULL,
  manifest_sha256 text NOT NULL,
  schema_version text NOT NULL,
  created_by text NOT NULL,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  archived_at timestamp with time zone,
  created_via_operator boolean DEFAULT false NOT NULL,
  CONSTRAINT policy_set_versions_policy_set_id_version_key UNIQUE (policy_set_id, version)
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS policy_set_bindings (
  zone_id text NOT NULL CONSTRAINT policy_set_bindings_zone_id_fkey REFERENCES zones(id),
  policy_set_id text NOT NULL CONSTRAINT policy_set_bindings_policy_set_id_fkey REFERENCES policy_sets(id),
  active_version_id text CONSTRAINT policy_set_bindings_active_version_id_fkey REFERENCES policy_set_versions(id),
  updated_at timestamp with time zone DEFAULT now() NOT NULL,
  CONSTRAINT policy_set_bindings_pkey PRIMARY KEY (zone_id, policy_set_id)
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS policy_set_bindings_one_active_per_zone ON policy_set_bindings USING btree (zone_id) WHERE (active_version_id IS NOT NULL);
--> statement-breakpoint
-- Version rows are immutable, as upstream keeps them: the function and triggers are created only where
-- upstream's are absent (its function has the same name and effect).
DO $$
BEGIN
  IF to_regprocedure('reject_policy_version_mutation()') IS NULL THEN
    EXECUTE $f$CREATE FUNCTION reject_policy_version_mutation() RETURNS trigger LANGUAGE plpgsql AS $b$
      BEGIN
        RAISE EXCEPTION 'policy version rows cannot be changed or deleted';
      END
    $b$ $f$;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'policy_versions_immutable' AND tgrelid = 'policy_versions'::regclass) THEN
    CREATE TRIGGER policy_versions_immutable BEFORE DELETE OR UPDATE ON policy_versions
      FOR EACH ROW EXECUTE FUNCTION reject_policy_version_mutation();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'policy_set_versions_immutable' AND tgrelid = 'policy_set_versions'::regclass) THEN
    CREATE TRIGGER policy_set_versions_immutable BEFORE DELETE OR UPDATE ON policy_set_versions
      FOR EACH ROW EXECUTE FUNCTION reject_policy_version_mutation();
  END IF;
END
$$;
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS zone_public_keys (
  zone_id text NOT NULL,
  kid text NOT NULL,
  public_jwk jsonb NOT NULL,
  alg text DEFAULT 'ES256' NOT NULL,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  not_after timestamp with time zone,
  CONSTRAINT zone_public_keys_pkey PRIMARY KEY (zone_id, kid),
  CONSTRAINT zone_public_keys_no_private_member CHECK (NOT (public_jwk ?| array['d','p','q','dp','dq','qi','k']))
);
