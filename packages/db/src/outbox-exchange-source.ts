/**
 * `outbox_exchange` has one source file, `sql/outbox_exchange.sql`; every migration that (re)defines the
 * function is a copy of it made by `scripts/new-outbox-exchange-migration.mjs`. These helpers find the
 * newest definition among the migrations and compare function bodies, ignoring comments and whitespace.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { MIGRATIONS_FOLDER } from "./migrate-lib.js";

export const OUTBOX_EXCHANGE_SOURCE = fileURLToPath(new URL("../sql/outbox_exchange.sql", import.meta.url));
const DEFINITION = "CREATE OR REPLACE FUNCTION outbox_exchange(";

/** The `CREATE OR REPLACE FUNCTION outbox_exchange(...) ... $$;` statement of a SQL text, or undefined. */
export function outboxExchangeDefinition(sql: string): string | undefined {
  const start = sql.lastIndexOf(DEFINITION);
  if (start < 0) return undefined;
  const bodyEnd = sql.indexOf("$$;", sql.indexOf("$$", sql.indexOf("$$", start) + 2));
  return bodyEnd < 0 ? undefined : sql.slice(start, bodyEnd + 3);
}

/** Comments and whitespace removed: two definitions that differ only there are the same function. */
export function normalizeSql(sql: string): string {
  return sql
    .split("\n")
    .map((line) => line.replace(/--.*$/, ""))
    .join(" ")
    .replace(/\s+/g, " ")
    .trim();
}

/** The newest migration (journal order) that defines outbox_exchange: its tag and the definition. */
export function newestOutboxExchangeMigration(): { tag: string; definition: string } | undefined {
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, "meta", "_journal.json"), "utf8")) as { entries: Array<{ tag: string }> };
  for (const { tag } of [...journal.entries].reverse()) {
    const definition = outboxExchangeDefinition(readFileSync(join(MIGRATIONS_FOLDER, `${tag}.sql`), "utf8"));
    if (definition !== undefined) return { tag, definition };
  }
  return undefined;
}
