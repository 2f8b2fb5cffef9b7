#!/usr/bin/env node
// Writes the next migration as a copy of sql/outbox_exchange.sql (the function's one source):
//   pnpm --filter @caracal/db migration:outbox-exchange <name>
// Adds drizzle's journal entry and a snapshot (the schema is unchanged: a copy of the newest snapshot).
import { randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const name = process.argv[2];
if (!name || !/^[a-z0-9_]+$/.test(name)) {
  console.error("usage: migration:outbox-exchange <name> (lowercase letters, digits, underscores)");
  process.exit(2);
}
const folder = join(root, "drizzle");
const journalPath = join(folder, "meta", "_journal.json");
const journal = JSON.parse(readFileSync(journalPath, "utf8"));
const last = journal.entries.at(-1);
const idx = last.idx + 1;
const number = String(Math.max(idx, Number(last.tag.slice(0, 4)) + 1)).padStart(4, "0");
const tag = `${number}_${name}`;
const source = readFileSync(join(root, "sql", "outbox_exchange.sql"), "utf8");
writeFileSync(join(folder, `${tag}.sql`), `-- A copy of packages/db/sql/outbox_exchange.sql (the function's one source), made by\n-- scripts/new-outbox-exchange-migration.mjs. Do not edit: change the source and make a new migration.\n${source}`);
const snapshot = JSON.parse(readFileSync(join(folder, "meta", `${last.tag.slice(0, 4)}_snapshot.json`), "utf8"));
snapshot.prevId = snapshot.id;
snapshot.id = randomUUID();
writeFileSync(join(folder, "meta", `${number}_snapshot.json`), `${JSON.stringify(snapshot, null, 2)}\n`);
journal.entries.push({ idx, version: last.version, when: Math.max(Date.now(), last.when + 1), tag, breakpoints: true });
writeFileSync(journalPath, `${JSON.stringify(journal, null, 2)}\n`);
console.log(`wrote drizzle/${tag}.sql`);
