import { createHash, randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { MIGRATIONS_FOLDER, migrateDatabase } from "@caracal/db";
import pg from "pg";

import { withDatabase } from "./urls.js";

export { withDatabase };

function migrationsHash(): string {
  const hash = createHash("sha256");
  for (const file of readdirSync(MIGRATIONS_FOLDER).filter((f) => f.endsWith(".sql")).sort()) {
    hash.update(file).update(readFileSync(join(MIGRATIONS_FOLDER, file)));
  }
  return hash.digest("hex").slice(0, 12);
}

/**
 * A database with every migration applied, named after the migrations' hash so that it is built once
 * and reused; every test clones it (CREATE DATABASE ... TEMPLATE), which takes tens of milliseconds.
 */
export async function ensureTemplateDatabase(adminUrl: string): Promise<string> {
  const name = `caracal_tpl_${migrationsHash()}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query("SELECT pg_advisory_lock(7358120042)");
    const { rowCount } = await admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [name]);
    if (rowCount === 0) {
      const building = `${name}_building`;
      await admin.query(`DROP DATABASE IF EXISTS ${building}`);
      await admin.query(`CREATE DATABASE ${building}`);
      await migrateDatabase(withDatabase(adminUrl, building));
      await admin.query(`ALTER DATABASE ${building} RENAME TO ${name}`);
    }
    return name;
  } finally {
    await admin.query("SELECT pg_advisory_unlock(7358120042)").catch(() => undefined);
    await admin.end();
  }
}

export interface TestDatabase {
  /** URL of this test's own database. */
  url: string;
  name: string;
  pool: pg.Pool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/** A fresh, migrated database of the test's own (a clone of the template), or empty when `migrated` is false. */
export async function createTestDatabase(
  adminUrl: string,
  template: string,
  options: { migrated?: boolean } = {},
): Promise<TestDatabase> {
  const name = `caracal_t_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const from = options.migrated === false ? "template0" : template;
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.query(`CREATE DATABASE ${name} TEMPLATE ${from}`);
        break;
      } catch (error) {
        // Two clones of one template at the same instant can collide; retry shortly.
        if (attempt >= 20 || !/being accessed by other users/.test(String(error))) throw error;
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
      }
    }
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // Should `drop()` have to terminate a connection (WITH FORCE, below), the FATAL 57P01 it causes on an
  // idle or closing client is expected and must not crash the test worker.
  pool.on("error", () => undefined);
  pool.on("connect", (client) => client.on("error", () => undefined));
  return {
    url,
    name,
    pool,
    async drop() {
      await pool.end().catch(() => undefined);
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        // A plain DROP first: terminating a connection that is still closing surfaces in its client as
        // FATAL 57P01, an error the test did not cause. Connections the code under test left open get
        // 5 s to close; then they are terminated (WITH FORCE) so a leak cannot block the run.
        for (let attempt = 0; ; attempt++) {
          try {
            await c.query(attempt < 50 ? `DROP DATABASE IF EXISTS ${name}` : `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
            break;
          } catch (error) {
            if (attempt >= 50 || !/being accessed by other users/.test(String(error))) throw error;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      } finally {
        await c.end();
      }
    },
  };
}
