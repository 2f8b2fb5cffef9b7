import type { SQL } from "drizzle-orm";
import { sql } from "drizzle-orm";

/** A `pg` client (a `PoolClient` or `Client` inside the caller's transaction); a `Pool` also fits, in autocommit. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
}

/** A drizzle transaction (or database) on node-postgres: anything with `execute(sql)`. */
export interface DrizzleExecutor {
  execute(query: SQL): Promise<{ rows: Record<string, unknown>[]; rowCount?: number | null }>;
}

/**
 * Where an outbox row is written: the caller's open transaction, as a drizzle transaction or a pg client.
 * The row (and the NOTIFY) only take effect if that transaction commits.
 */
export type OutboxTx = PgQueryable | DrizzleExecutor;

function isDrizzle(tx: OutboxTx): tx is DrizzleExecutor {
  return typeof (tx as Partial<DrizzleExecutor>).execute === "function";
}

/** Runs a `$n`-parameterised statement on either kind of executor. */
export async function run(tx: OutboxTx, text: string, values: unknown[]): Promise<Record<string, unknown>[]> {
  if (isDrizzle(tx)) return (await tx.execute(toDrizzleSql(text, values))).rows;
  return (await tx.query(text, values)).rows;
}

/** `$1`-style text to a drizzle SQL object with the same parameters (never interpolated as text). */
function toDrizzleSql(text: string, values: unknown[]): SQL {
  const chunks: SQL[] = [];
  const placeholder = /\$(\d+)/g;
  let last = 0;
  for (let m = placeholder.exec(text); m !== null; m = placeholder.exec(text)) {
    chunks.push(sql.raw(text.slice(last, m.index)));
    chunks.push(sql`${values[Number(m[1]) - 1]}`);
    last = placeholder.lastIndex;
  }
  chunks.push(sql.raw(text.slice(last)));
  return sql.join(chunks, sql.raw(""));
}
