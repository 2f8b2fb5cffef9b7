import { createHash } from "node:crypto";

import { createMigratedDatabase, hasPostgres } from "@caracal/testkit";
import type { TestDatabase } from "@caracal/testkit";
import type pg from "pg";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { PolicyActivationError } from "./errors.js";
import { activatePolicySetVersion, manifestSha256 } from "./policy-activation.js";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

async function seed(pool: pg.Pool, zone: string, modules: number): Promise<{ setId: string; versionIds: string[] }> {
  await pool.query("INSERT INTO zones (id, name, slug) VALUES ($1, $1, $1) ON CONFLICT DO NOTHING", [zone]);
  const setId = `${zone}-set`;
  await pool.query("INSERT INTO policy_sets (id, zone_id, name, created_by) VALUES ($1, $2, 'set', 'test')", [setId, zone]);
  await pool.query("INSERT INTO policy_set_bindings (zone_id, policy_set_id) VALUES ($1, $2)", [zone, setId]);
  const versionIds: string[] = [];
  for (let i = 0; i < modules; i++) {
    const content = `package caracal.authz\n\nrule_${i} := true\n`;
    await pool.query("INSERT INTO policies (id, zone_id, name, created_by) VALUES ($1, $2, $1, 'test')", [`${zone}-p${i}`, zone]);
    await pool.query(
      "INSERT INTO policy_versions (id, policy_id, version, content, content_sha256, schema_version, created_by) VALUES ($1, $2, 1, $3, $4, 'v1', 'test')",
      [`${zone}-pv${i}`, `${zone}-p${i}`, content, sha(content)],
    );
    versionIds.push(`${zone}-pv${i}`);
  }
  return { setId, versionIds };
}

async function addSetVersion(pool: pg.Pool, setId: string, id: string, version: number, policyVersionIds: string[], hash?: string): Promise<void> {
  const manifest = policyVersionIds.map((policy_version_id) => ({ policy_version_id }));
  await pool.query(
    "INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, schema_version, created_by) VALUES ($1, $2, $3, $4::jsonb, $5, 'v1', 'test')",
    [id, setId, version, JSON.stringify(manifest), hash ?? manifestSha256(manifest)],
  );
}

async function inTx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    const out = await fn(c);
    await c.query("COMMIT");
    return out;
  } catch (error) {
    await c.query("ROLLBACK");
    throw error;
  } finally {
    c.release();
  }
}

describe.skipIf(!hasPostgres())("activatePolicySetVersion", () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createMigratedDatabase();
  });
  afterEach(async () => {
    await db.drop();
  });

  it("hashes the manifest as upstream does: compact, only policy_version_id", () => {
    expect(manifestSha256([{ policy_version_id: "a", extra: 1 }, { policy_version_id: "b" }])).toBe(sha('[{"policy_version_id":"a"},{"policy_version_id":"b"}]'));
  });

  it("switches the binding and enqueues caracal.policy.invalidate in the caller's transaction", async () => {
    const { setId, versionIds } = await seed(db.pool, "z1", 2);
    await addSetVersion(db.pool, setId, "v1", 1, versionIds);
    const result = await inTx(db.pool, (c) => activatePolicySetVersion(c, "z1", setId, "v1"));
    expect(result.previousVersionId).toBeUndefined();
    const { rows } = await db.pool.query("SELECT active_version_id FROM policy_set_bindings WHERE zone_id = 'z1'");
    expect(rows).toEqual([{ active_version_id: "v1" }]);
    const outbox = await db.pool.query("SELECT id, stream_name, payload_json FROM event_outbox");
    expect(outbox.rows).toEqual([
      { id: result.outboxId, stream_name: "caracal.policy.invalidate", payload_json: { zone_id: "z1", policy_set_id: setId, policy_set_version_id: "v1", shadow_version_id: "" } },
    ]);
  });

  it("rolls back with the caller: no binding change, no outbox row", async () => {
    const { setId, versionIds } = await seed(db.pool, "z1", 1);
    await addSetVersion(db.pool, setId, "v1", 1, versionIds);
    await expect(
      inTx(db.pool, async (c) => {
        await activatePolicySetVersion(c, "z1", setId, "v1");
        throw new Error("caller fails after");
      }),
    ).rejects.toThrow("caller fails after");
    expect((await db.pool.query("SELECT active_version_id FROM policy_set_bindings")).rows).toEqual([{ active_version_id: null }]);
    expect((await db.pool.query("SELECT 1 FROM event_outbox")).rowCount).toBe(0);
  });

  it("refuses a wrong manifest_sha256, a missing policy version and a version of another zone", async () => {
    const { setId, versionIds } = await seed(db.pool, "z1", 2);
    await addSetVersion(db.pool, setId, "bad-hash", 1, versionIds, "0".repeat(64));
    await addSetVersion(db.pool, setId, "missing", 2, [...versionIds, "no-such-version"]);
    const other = await seed(db.pool, "z2", 1);
    await addSetVersion(db.pool, other.setId, "z2-v", 1, other.versionIds);
    const problem = async (zone: string, set: string, version: string) => {
      try {
        await inTx(db.pool, (c) => activatePolicySetVersion(c, zone, set, version));
        return "activated";
      } catch (error) {
        return error instanceof PolicyActivationError ? error.problem : String(error);
      }
    };
    expect(await problem("z1", setId, "bad-hash")).toBe("manifest_sha256_mismatch");
    expect(await problem("z1", setId, "missing")).toBe("referenced_policy_version_missing");
    expect(await problem("z1", other.setId, "z2-v")).toBe("version_not_found");
    expect((await db.pool.query("SELECT 1 FROM event_outbox")).rowCount).toBe(0);
  });

  it("keeps one active binding per zone: activating another set deactivates the first", async () => {
    const a = await seed(db.pool, "z1", 1);
    await addSetVersion(db.pool, a.setId, "a1", 1, a.versionIds);
    await db.pool.query("INSERT INTO policy_sets (id, zone_id, name, created_by) VALUES ('z1-set-b', 'z1', 'b', 'test')");
    await db.pool.query("INSERT INTO policy_set_bindings (zone_id, policy_set_id) VALUES ('z1', 'z1-set-b')");
    await addSetVersion(db.pool, "z1-set-b", "b1", 1, a.versionIds);
    await inTx(db.pool, (c) => activatePolicySetVersion(c, "z1", a.setId, "a1"));
    const second = await inTx(db.pool, (c) => activatePolicySetVersion(c, "z1", "z1-set-b", "b1"));
    expect(second.previousVersionId).toBe("a1");
    const { rows } = await db.pool.query("SELECT policy_set_id, active_version_id FROM policy_set_bindings ORDER BY policy_set_id");
    expect(rows).toEqual([
      { policy_set_id: a.setId, active_version_id: null },
      { policy_set_id: "z1-set-b", active_version_id: "b1" },
    ]);
  });

  it("version rows are immutable", async () => {
    const { setId, versionIds } = await seed(db.pool, "z1", 1);
    await addSetVersion(db.pool, setId, "v1", 1, versionIds);
    await expect(db.pool.query("UPDATE policy_set_versions SET manifest_sha256 = 'x'")).rejects.toThrow(/cannot be changed/);
    await expect(db.pool.query("DELETE FROM policy_versions")).rejects.toThrow(/cannot be changed/);
  });
});
