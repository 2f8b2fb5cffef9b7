import { drizzle } from "drizzle-orm/node-postgres";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import pg from "pg";

import * as schema from "./schema/index.js";

export * from "./schema/index.js";
export { schema };
export { migrateDatabase, MIGRATIONS_FOLDER } from "./migrate-lib.js";

export type Database = NodePgDatabase<typeof schema>;

/** A pool with the project's defaults; `max` sized for a service with a few concurrent batches. */
export function createPool(connectionString: string, options: pg.PoolConfig = {}): pg.Pool {
  return new pg.Pool({ connectionString, max: 10, ...options });
}

export function createDatabase(pool: pg.Pool): Database {
  return drizzle(pool, { schema });
}
