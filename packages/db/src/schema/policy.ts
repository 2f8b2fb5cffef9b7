import { sql } from "drizzle-orm";
import { check, foreignKey, primaryKey as pk, unique } from "drizzle-orm/pg-core";

import { boolean, index, integer, jsonb, pgTable, text, timestamptz, uniqueIndex } from "./columns.js";

/**
 * Upstream Caracal's policy tables, column for column (names, types, defaults, keys), so that this
 * project's services run on an upstream database unchanged. Migration 0015 creates them only where they
 * are missing (an upstream database is adopted, nothing dropped). Upstream's row-level security policies
 * are not recreated here: a fresh database of this project has no zone-scoped roles.
 *
 * `policy_versions` and `policy_set_versions` rows are immutable (a trigger rejects UPDATE and DELETE),
 * so a version id names one content for ever: a bundle revision may be derived from it.
 */
export const zones = pgTable(
  "zones",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    slug: text("slug").notNull().unique("zones_slug_key"),
    dcrEnabled: boolean("dcr_enabled").notNull().default(false),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
    archivedAt: timestamptz("archived_at"),
    ownerAccountId: text("owner_account_id"),
    operatorCoauthorBadge: boolean("operator_coauthor_badge").notNull().default(true),
    operatorGoverned: boolean("operator_governed").notNull().default(false),
    createdBy: text("created_by"),
    createdViaOperator: boolean("created_via_operator").notNull().default(false),
    updatedBy: text("updated_by"),
    updatedViaOperator: boolean("updated_via_operator").notNull().default(false),
  },
  (t) => [index("zones_active_idx").on(t.id).where(sql`${t.archivedAt} IS NULL`)],
);

export const policies = pgTable(
  "policies",
  {
    id: text("id").primaryKey(),
    zoneId: text("zone_id").notNull(),
    name: text("name").notNull(),
    description: text("description"),
    archivedAt: timestamptz("archived_at"),
    createdBy: text("created_by").notNull(),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
    createdViaOperator: boolean("created_via_operator").notNull().default(false),
    updatedBy: text("updated_by"),
    updatedViaOperator: boolean("updated_via_operator").notNull().default(false),
  },
  (t) => [
    foreignKey({ name: "policies_zone_id_fkey", columns: [t.zoneId], foreignColumns: [zones.id] }),
    uniqueIndex("policies_zone_id_name_key").on(t.zoneId, t.name).where(sql`${t.archivedAt} IS NULL`),
  ],
);

export const policyVersions = pgTable(
  "policy_versions",
  {
    id: text("id").primaryKey(),
    policyId: text("policy_id").notNull(),
    version: integer("version").notNull(),
    /** Rego source of one module; bundled as `{id}.rego`. */
    content: text("content").notNull(),
    contentSha256: text("content_sha256").notNull(),
    schemaVersion: text("schema_version").notNull(),
    createdBy: text("created_by").notNull(),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    archivedAt: timestamptz("archived_at"),
    createdViaOperator: boolean("created_via_operator").notNull().default(false),
  },
  (t) => [
    foreignKey({ name: "policy_versions_policy_id_fkey", columns: [t.policyId], foreignColumns: [policies.id] }),
    unique("policy_versions_policy_id_version_key").on(t.policyId, t.version),
  ],
);

export const policySets = pgTable(
  "policy_sets",
  {
    id: text("id").primaryKey(),
    zoneId: text("zone_id").notNull(),
    name: text("name").notNull(),
    description: text("description"),
    archivedAt: timestamptz("archived_at"),
    createdBy: text("created_by").notNull(),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
    createdViaOperator: boolean("created_via_operator").notNull().default(false),
    updatedBy: text("updated_by"),
    updatedViaOperator: boolean("updated_via_operator").notNull().default(false),
  },
  (t) => [foreignKey({ name: "policy_sets_zone_id_fkey", columns: [t.zoneId], foreignColumns: [zones.id] })],
);

export const policySetVersions = pgTable(
  "policy_set_versions",
  {
    id: text("id").primaryKey(),
    policySetId: text("policy_set_id").notNull(),
    version: integer("version").notNull(),
    /** JSON array of `{"policy_version_id": ...}`. */
    manifestJson: jsonb("manifest_json").notNull(),
    /** Hex SHA-256 of the manifest array re-serialised compactly with only `policy_version_id` keys. */
    manifestSha256: text("manifest_sha256").notNull(),
    schemaVersion: text("schema_version").notNull(),
    createdBy: text("created_by").notNull(),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    archivedAt: timestamptz("archived_at"),
    createdViaOperator: boolean("created_via_operator").notNull().default(false),
  },
  (t) => [
    foreignKey({ name: "policy_set_versions_policy_set_id_fkey", columns: [t.policySetId], foreignColumns: [policySets.id] }),
    unique("policy_set_versions_policy_set_id_version_key").on(t.policySetId, t.version),
  ],
);

/** A zone's active policy: at most one binding per zone has an `active_version_id`. */
export const policySetBindings = pgTable(
  "policy_set_bindings",
  {
    zoneId: text("zone_id").notNull(),
    policySetId: text("policy_set_id").notNull(),
    activeVersionId: text("active_version_id"),
    updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
  },
  (t) => [
    pk({ name: "policy_set_bindings_pkey", columns: [t.zoneId, t.policySetId] }),
    foreignKey({ name: "policy_set_bindings_zone_id_fkey", columns: [t.zoneId], foreignColumns: [zones.id] }),
    foreignKey({ name: "policy_set_bindings_policy_set_id_fkey", columns: [t.policySetId], foreignColumns: [policySets.id] }),
    foreignKey({ name: "policy_set_bindings_active_version_id_fkey", columns: [t.activeVersionId], foreignColumns: [policySetVersions.id] }),
    uniqueIndex("policy_set_bindings_one_active_per_zone").on(t.zoneId).where(sql`${t.activeVersionId} IS NOT NULL`),
  ],
);

/**
 * This project's table (upstream keeps only sealed private keys, in `secrets`, and derives its JWKS from
 * them with the key-encryption key): each zone's public verification keys as JWKs, written by whoever
 * rotates a zone's signing key, so that a service holding no private material can serve the JWKS. A key
 * is served while `not_after` is NULL or in the future.
 */
export const zonePublicKeys = pgTable(
  "zone_public_keys",
  {
    zoneId: text("zone_id").notNull(),
    kid: text("kid").notNull(),
    /** The public JWK (`kty`, `crv`, `x`, `y` / `n`, `e`, ...), without private members. */
    publicJwk: jsonb("public_jwk").notNull(),
    alg: text("alg").notNull().default("ES256"),
    createdAt: timestamptz("created_at").notNull().default(sql`now()`),
    notAfter: timestamptz("not_after"),
  },
  (t) => [
    pk({ name: "zone_public_keys_pkey", columns: [t.zoneId, t.kid] }),
    check("zone_public_keys_no_private_member", sql`NOT (${t.publicJwk} ?| array['d','p','q','dp','dq','qi','k'])`),
  ],
);
