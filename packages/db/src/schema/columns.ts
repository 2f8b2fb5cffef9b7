/** Column helpers shared by every table: timestamps are always `timestamptz` read as Date. */
import { timestamp } from "drizzle-orm/pg-core";

export { bigint, bigserial, boolean, index, integer, jsonb, pgTable, primaryKey, text, uniqueIndex } from "drizzle-orm/pg-core";

export function timestamptz(name: string) {
  return timestamp(name, { withTimezone: true, mode: "date" });
}
