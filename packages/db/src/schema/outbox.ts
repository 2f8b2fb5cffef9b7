import { sql } from "drizzle-orm";
import { integer, jsonb, pgTable, text, timestamptz } from "./columns.js";

/**
 * The transactional outbox: a superset of the upstream `event_outbox` table. Upstream columns keep their
 * names and types so an upstream database is adopted in place by `pnpm db:migrate`.
 */
export const eventOutbox = pgTable("event_outbox", {
  id: text("id").primaryKey(),
  streamName: text("stream_name").notNull(),
  payloadJson: jsonb("payload_json").notNull(),
  attempts: integer("attempts").notNull().default(0),
  availableAt: timestamptz("available_at").notNull().default(sql`now()`),
  lockedUntil: timestamptz("locked_until"),
  lockedBy: text("locked_by"),
  lastError: text("last_error"),
  dispatchedAt: timestamptz("dispatched_at"),
  requestId: text("request_id"),
  createdAt: timestamptz("created_at").notNull().default(sql`now()`),
});
