/**
 * The `audit_events_dlq` table (seed schema): entries whose ledger write kept failing for
 * AUDIT_MAX_DELIVERIES deliveries. The row id is derived from the stream entry id, so writing the same
 * entry twice (a crash between the insert and the ack) leaves one row.
 */
import type { Fields } from "@caracal/streams-core";
import type pg from "pg";

export interface DlqTableEntry {
  readonly streamEntryId: string;
  /** The frame's fields as received (`id`, `data`, `sig`, ...), stored as a JSON object. */
  readonly fields: Readonly<Fields>;
  readonly error: string;
  readonly attempts: number;
}

/** Inserts the entries in one statement; throws on failure (the caller must then not ack). */
export async function writeDlqRows(pool: pg.Pool, stream: string, entries: readonly DlqTableEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await pool.query(
    `INSERT INTO audit_events_dlq (id, stream_entry_id, original_event_json, error, attempts)
     SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::int[])
     ON CONFLICT (id) DO NOTHING`,
    [
      entries.map((e) => `${stream}:${e.streamEntryId}`),
      entries.map((e) => e.streamEntryId),
      entries.map((e) => JSON.stringify(e.fields)),
      entries.map((e) => e.error.slice(0, 2000)),
      entries.map((e) => e.attempts),
    ],
  );
}
