import { sql } from "drizzle-orm";
import { check, customType, pgSequence } from "drizzle-orm/pg-core";

import { bigint, boolean, index, integer, jsonb, pgTable, text, timestamptz } from "./columns.js";

/**
 * A full 64-bit transaction id (`xid8`), read as its decimal text. Compared with
 * `pg_snapshot_xmin(pg_current_snapshot())` to tell a finished inserting transaction from a running one.
 */
const xid8 = customType<{ data: string; driverData: string }>({
  dataType: () => "xid8",
});

/** Insertion order within a transaction (and a tie-break across upstream rows). */
export const eventOutboxSeq = pgSequence("event_outbox_seq");

/**
 * The transactional outbox: a superset of the upstream `event_outbox` table. Upstream columns keep their
 * names and types so an upstream database is adopted in place by `pnpm db:migrate`; every column added
 * here is nullable or defaulted, and rows written before the adoption keep NULL in them.
 *
 * Dispatch order is `(tx_id, seq, created_at, id)` with NULL read as 0 (pre-adoption rows first), and a
 * row is claimable only once its `tx_id` is below the guard bound (the least running transaction of this
 * database): its inserting transaction and every older one have finished, so no row with a smaller key
 * can still appear (Watermill issue 311). The claim is the plpgsql function `outbox_exchange`
 * (packages/db/sql/outbox_exchange.sql). See docs/outbox.md.
 *
 * Migration 0004 also sets `fillfactor = 50` (drizzle cannot declare it): with no index on
 * `locked_until`/`locked_by`, the lease update is HOT when the page has room for the new version. Do not
 * add an index (or an index predicate) on those columns: every lease would write index entries again.
 */
export const eventOutbox = pgTable(
  "event_outbox",
  {
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
    /** Inserting transaction (`pg_current_xact_id()`); NULL on rows written before adoption. */
    txId: xid8("tx_id").default(sql`pg_current_xact_id()`),
    /** `nextval('event_outbox_seq')` at insert; NULL on rows written before adoption. */
    seq: bigint("seq", { mode: "bigint" }).default(sql`nextval('event_outbox_seq')`),
    /** Set when the row will not be retried (max attempts, or a payload that can never be published). */
    failedAt: timestamptz("failed_at"),
    /** Stream entry id returned by XADD, for inspection. */
    streamEntryId: text("stream_entry_id"),
  },
  (t) => [
    // Claim scan: pending rows in dispatch order.
    index("event_outbox_pending_idx")
      .on(sql`coalesce(${t.txId}, '0'::xid8)`, sql`coalesce(${t.seq}, 0)`, t.createdAt, t.id)
      .where(sql`${t.dispatchedAt} IS NULL AND ${t.failedAt} IS NULL`),
    // Retention sweep.
    index("event_outbox_dispatched_idx").on(t.dispatchedAt).where(sql`${t.dispatchedAt} IS NOT NULL`),
    // Operator inspection and requeue of failed rows.
    index("event_outbox_failed_idx").on(t.failedAt).where(sql`${t.failedAt} IS NOT NULL`),
  ],
);

/**
 * One row. `requeue` bumps `requeues` in its own transaction; `outbox_exchange` then reads the pending
 * index from its start again instead of from where its previous scan began (requeued rows keep their old
 * place keys, below that start). Migration 0006.
 */
export const eventOutboxRescan = pgTable(
  "event_outbox_rescan",
  {
    id: boolean("id").primaryKey().default(true),
    requeues: bigint("requeues", { mode: "number" }).notNull().default(0),
  },
  (t) => [check("event_outbox_rescan_one_row", sql`${t.id}`)],
);
