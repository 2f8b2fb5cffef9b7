import { drizzle } from "drizzle-orm/node-postgres";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import pg from "pg";

import * as schema from "./schema/index.js";

export * from "./schema/index.js";
export { schema };
export { migrateDatabase, MIGRATIONS_FOLDER } from "./migrate-lib.js";

export type Database = NodePgDatabase<typeof schema>;

/**
 * Session setting of every connection: upstream's tables carry row-level security keyed on
 * `caracal.zone_id` (`'*'` = every zone). A service here works across zones, as upstream's audit and
 * dispatch services do; on a table without such a policy, or for the table's owner, it changes nothing.
 */
export const ALL_ZONES_SESSION_OPTION = "-c caracal.zone_id=*";

/** A pool with the project's defaults; `max` sized for a service with a few concurrent batches. */
export function createPool(connectionString: string, options: pg.PoolConfig = {}): pg.Pool {
  return new pg.Pool({ connectionString, max: 10, ...options, options: [ALL_ZONES_SESSION_OPTION, options.options].filter(Boolean).join(" ") });
}

export function createDatabase(pool: pg.Pool): Database {
  return drizzle(pool, { schema });
}

/**
 * `client.query(config)` for a hot path: the same query, through node-postgres's callback form, with the
 * promise made here.
 *
 * Why: the promise node-postgres makes for `client.query(config)` comes from one allocation site shared
 * by every query of the process. Once some queries there have lived long (a big INSERT, a slow query at
 * start-up), V8 pretenures that site: later promises are allocated straight in the old generation, and
 * each one, resolved with its young result rows, keeps them alive through young-generation collections
 * until a full collection, so every result is copied and promoted. `pnpm bench:gc` (pg case: 32 rows of
 * 300 bytes per query) measures both forms with V8's GC trace (docs/benchmarks.md, "gc").
 */
export function queryResult<R extends pg.QueryResultRow>(client: pg.ClientBase, config: pg.QueryConfig): Promise<pg.QueryResult<R>> {
  return new Promise((resolve, reject) => {
    client.query<R>(config, (error: Error | undefined, result: pg.QueryResult<R>) => (error ? reject(error) : resolve(result)));
  });
}
