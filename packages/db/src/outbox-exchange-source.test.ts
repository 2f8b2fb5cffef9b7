import { readFileSync } from "node:fs";

import { describe, expect, it } from "vitest";

import { OUTBOX_EXCHANGE_SOURCE, newestOutboxExchangeMigration, normalizeSql, outboxExchangeDefinition } from "./outbox-exchange-source.js";

describe("outbox_exchange has one source file", () => {
  it("the newest migration that defines the function is a copy of sql/outbox_exchange.sql", () => {
    const source = outboxExchangeDefinition(readFileSync(OUTBOX_EXCHANGE_SOURCE, "utf8"));
    const newest = newestOutboxExchangeMigration();
    expect(source, "sql/outbox_exchange.sql defines the function").toBeDefined();
    expect(newest, "a migration defines the function").toBeDefined();
    // On failure: the source was edited without a migration (run `pnpm --filter @caracal/db
    // migration:outbox-exchange <name>`), or a migration was edited by hand (edit the source instead).
    expect(normalizeSql(newest!.definition), `migration ${newest!.tag} differs from sql/outbox_exchange.sql`).toBe(normalizeSql(source!));
  });

  it("the comparison sees a changed statement and ignores comments and layout", () => {
    const a = "CREATE OR REPLACE FUNCTION outbox_exchange(p integer) RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  -- why\n  PERFORM 1;\nEND\n$$;";
    const b = "CREATE OR REPLACE FUNCTION outbox_exchange(p integer)  RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; -- other words\nEND $$;";
    const c = a.replace("PERFORM 1", "PERFORM 2");
    expect(normalizeSql(outboxExchangeDefinition(a)!)).toBe(normalizeSql(outboxExchangeDefinition(b)!));
    expect(normalizeSql(outboxExchangeDefinition(a)!)).not.toBe(normalizeSql(outboxExchangeDefinition(c)!));
  });
});
