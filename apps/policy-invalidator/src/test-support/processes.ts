/** Test helpers: real service processes (policy invalidator replicas, the outbox dispatcher) and seed rows. */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";

import type pg from "pg";

export const TEST_KEY_HEX = "b2".repeat(32);
export const POLICY_MAIN = fileURLToPath(new URL("../../dist/main.js", import.meta.url));
export const DISPATCHER_MAIN = fileURLToPath(new URL("../../../outbox-dispatcher/dist/main.js", import.meta.url));

export interface Child {
  process: ChildProcess;
  port: Promise<number>;
  exited: Promise<number | null>;
  output(): string;
}

export function spawnService(main: string, runningLine: RegExp, env: Record<string, string>): Child {
  const child = spawn(process.execPath, [main], {
    env: { PATH: process.env.PATH ?? "", STREAMS_HMAC_KEY: TEST_KEY_HEX, PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const port = new Promise<number>((resolve, reject) => {
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const m = new RegExp(`"port":(\\d+)[^\\n]*${runningLine.source}`).exec(output);
      if (m) resolve(Number(m[1]));
    });
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.once("exit", () => reject(new Error(`process exited before it was running:\n${output}`)));
  });
  port.catch(() => undefined);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { process: child, port, exited, output: () => output };
}

export const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** A zone with a policy set, its (inactive) binding and `modules` policy versions. */
export async function seedZone(pool: pg.Pool, zone: string, modules: number, contentOf = (i: number) => `package caracal.authz\n\nrule_${i} := true\n`): Promise<{ setId: string; versionIds: string[] }> {
  await pool.query("INSERT INTO zones (id, name, slug) VALUES ($1, $1, $1) ON CONFLICT DO NOTHING", [zone]);
  const setId = `${zone}-set`;
  await pool.query("INSERT INTO policy_sets (id, zone_id, name, created_by) VALUES ($1, $2, 'set', 'test')", [setId, zone]);
  await pool.query("INSERT INTO policy_set_bindings (zone_id, policy_set_id) VALUES ($1, $2)", [zone, setId]);
  const versionIds: string[] = [];
  for (let i = 0; i < modules; i++) {
    const content = contentOf(i);
    await pool.query("INSERT INTO policies (id, zone_id, name, created_by) VALUES ($1, $2, $1, 'test')", [`${zone}-p${i}`, zone]);
    await pool.query(
      "INSERT INTO policy_versions (id, policy_id, version, content, content_sha256, schema_version, created_by) VALUES ($1, $2, 1, $3, $4, 'v1', 'test')",
      [`${zone}-pv${i}`, `${zone}-p${i}`, content, sha(content)],
    );
    versionIds.push(`${zone}-pv${i}`);
  }
  return { setId, versionIds };
}

export async function addSetVersion(pool: pg.Pool, setId: string, id: string, version: number, policyVersionIds: string[], hash?: string): Promise<void> {
  const manifest = policyVersionIds.map((policy_version_id) => ({ policy_version_id }));
  await pool.query(
    "INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, schema_version, created_by) VALUES ($1, $2, $3, $4::jsonb, $5, 'v1', 'test')",
    [id, setId, version, JSON.stringify(manifest), hash ?? sha(JSON.stringify(manifest))],
  );
}

export async function inTx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
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

export async function waitFor<T>(probe: () => Promise<T | undefined | null | false>, timeoutMs = 20_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
