/**
 * The dispatcher's statements. Each batch costs two round trips: one to PostgreSQL (`outbox_exchange`:
 * write the outcomes of the previous batch + claim the next, one statement, one transaction) and one
 * pipelined XADD to Redis.
 *
 * The claim and the outcome writes live in the plpgsql function `outbox_exchange`, whose one source is
 * packages/db/sql/outbox_exchange.sql (migrations copy it): its statements are planned once per connection
 * instead of at every batch, and the outcomes travel as array parameters of a prepared statement, not as
 * SQL text.
 */
import pg from "pg";

/**
 * Serializes claims across replicas; `outbox_exchange` takes `pg_advisory_xact_lock` on this value (a
 * literal in packages/db/sql/outbox_exchange.sql: change both or neither).
 */
export const CLAIM_LOCK_KEY = 7358120051;

/** A claimed row; `outbox_exchange` returns them in dispatch order. */
export interface ClaimedRow {
  id: string;
  stream_name: string;
  /** The JSON text of the jsonb column, unparsed (see `EXCHANGE_TYPES`). */
  payload_json: string;
  attempts: number;
}

const JSONB_OID = 3802;

/**
 * Type parsers of `EXCHANGE_SQL`: jsonb stays text. The rows arrive while the claim lane waits, and the
 * next claim is sent only once they are parsed; the payloads are parsed later, when their batch is
 * published, while PostgreSQL works on the next claim.
 */
export const EXCHANGE_TYPES = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === JSONB_OID ? (value: string) => value : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/**
 * A row of `outbox_exchange`: a claimed row, or (only when nothing was claimed) one row with `id` NULL
 * whose `guarded` says whether committed pending rows wait behind a running transaction.
 */
export type ExchangeRow = (ClaimedRow & { guarded: false }) | ({ [K in keyof ClaimedRow]: null } & { guarded: boolean });

/**
 * Claim rules (the function's header comment has the full contract): up to `limit` due rows in dispatch
 * order `(tx_id, seq, created_at, id)`, leased to the owner, under the claim lock. A row is claimable
 * when it is pending, due, not under a live lease, below the guard bound (Watermill issue 311: a sequence
 * value is taken at insert but the row becomes visible at commit), and no earlier pending row of its
 * stream is leased by another replica or backing off. The caller's own leased rows do not block: they
 * are its in-flight batches, published ahead of this one (and a stream that failed there is released
 * from this batch unsent, see `RowOutcome` "release").
 */
export const EXCHANGE_SQL = "SELECT * FROM outbox_exchange($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/** Outcome of one claimed row, written back with the next claim. */
export type RowOutcome =
  | { kind: "dispatched"; id: string; entryId: string }
  | { kind: "retry"; id: string; delayMs: number; error: string; failNow: boolean }
  | { kind: "failed"; id: string; error: string }
  /** Not attempted (an earlier row of its stream just failed): lease dropped, attempts unchanged. */
  | { kind: "release"; id: string };

/**
 * Parameters of `EXCHANGE_SQL`: write `outcomes`, then claim up to `limit` rows (0: write only) leased
 * to `owner` for `leaseMs`. Dispatched rows are marked even if their lease has passed to another replica
 * (the entry is on the stream either way); retries, failures and releases only touch rows still leased
 * by `owner`, so they never disturb another replica's lease.
 */
export function exchangeParams(outcomes: readonly RowOutcome[], limit: number, leaseMs: number, owner: string): unknown[] {
  const dispatchedIds: string[] = [];
  const entryIds: string[] = [];
  const retryIds: string[] = [];
  const retryDelays: number[] = [];
  const retryErrors: string[] = [];
  const retryFailNow: boolean[] = [];
  const failedIds: string[] = [];
  const failedErrors: string[] = [];
  const releasedIds: string[] = [];
  for (const o of outcomes) {
    switch (o.kind) {
      case "dispatched":
        dispatchedIds.push(o.id);
        entryIds.push(o.entryId);
        break;
      case "retry":
        retryIds.push(o.id);
        retryDelays.push(int(o.delayMs));
        retryErrors.push(truncate(o.error));
        retryFailNow.push(o.failNow);
        break;
      case "failed":
        failedIds.push(o.id);
        failedErrors.push(truncate(o.error));
        break;
      case "release":
        releasedIds.push(o.id);
        break;
    }
  }
  return [owner, int(limit), int(leaseMs), dispatchedIds, entryIds, retryIds, retryDelays, retryErrors, retryFailNow, failedIds, failedErrors, releasedIds];
}

/** Deletes at most `limit` rows dispatched more than `retentionMs` ago; returns the count in `n`. */
export function retentionSql(retentionMs: number, limit: number): string {
  return `WITH gone AS (
  DELETE FROM event_outbox WHERE id IN (
    SELECT id FROM event_outbox WHERE dispatched_at IS NOT NULL AND dispatched_at < now() - ${int(retentionMs)} * interval '1 millisecond'
    ORDER BY dispatched_at LIMIT ${int(limit)}
  ) RETURNING 1
) SELECT count(*)::int AS n FROM gone`;
}

/** Pending/failed counts and the age of the oldest pending row, for the gauges. */
export const STATS_SQL = `SELECT
  count(*) FILTER (WHERE failed_at IS NULL)::int AS pending,
  count(*) FILTER (WHERE failed_at IS NOT NULL)::int AS failed,
  coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL)), 0)::float8 AS oldest_pending_s
FROM event_outbox WHERE dispatched_at IS NULL`;

function int(n: number): number {
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${n}`);
  return n;
}

/** last_error is for humans; a huge Redis error must not bloat the row. */
function truncate(text: string): string {
  return text.length > 2000 ? `${text.slice(0, 2000)}...` : text;
}
