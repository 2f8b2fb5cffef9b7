/** `pnpm db:migrate`: applies every migration to DATABASE_URL. */
import { migrateDatabase } from "./migrate-lib.js";

const url = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
try {
  await migrateDatabase(url);
  console.log(`migrations applied to ${new URL(url).host}${new URL(url).pathname}`);
} catch (error) {
  console.error(`migration failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
