/**
 * The dispatcher's statements. Each batch costs two round trips: one to PostgreSQL (mark the previous
 * batch + claim the next, in one transaction) and one pipelined XADD to Redis.
 *
 * Statements are sent with the simple query protocol so that several run in one round trip; every value
 * is either an integer we produced or a string escaped with pg's `escapeLiteral`.
 */
import pg from "pg";

const { escapeLiteral } = pg;

/** Serializes claims across replicas (see `claimSql`); the value is arbitrary but fixed. */
export const CLAIM_LOCK_KEY = 7358120051;

/**
 * The smallest transaction id that may still commit a row into this database's outbox: the least
 * running xid of the snapshot (`pg_snapshot_xip`) that is not known to belong to another database,
 * else the snapshot's xmax. Transactions of other databases cannot write this table, so they do not
 * hold dispatch back (the cluster-wide `pg_snapshot_xmin` would stall on any long write anywhere in
 * the cluster). A transaction that ended between the snapshot and the read of `pg_stat_activity`, or
 * whose row a less privileged role cannot see, counts as ours: the bound errs on the safe side.
 * Rows with `tx_id < GUARD_BOUND` can be ordered for good: every row that sorts before them is visible.
 */
const GUARD_BOUND = `(SELECT coalesce(
    (SELECT min(x) FROM pg_snapshot_xip(g.snap) AS x
     WHERE x::xid NOT IN (
       SELECT a.backend_xid FROM pg_stat_activity a
       WHERE a.backend_xid IS NOT NULL AND a.datid IS NOT NULL AND a.datname IS DISTINCT FROM current_database())),
    pg_snapshot_xmax(g.snap))
  FROM (SELECT pg_current_snapshot() AS snap) g)`;

/** Dispatch order of a row: NULL (rows written before adoption) reads as 0, so those go first. */
const ORDER_KEY = `coalesce(o.tx_id, '0'::xid8), coalesce(o.seq, 0), o.created_at, o.id`;

export interface ClaimedRow {
  id: string;
  stream_name: string;
  payload_json: unknown;
  attempts: number;
  tx_key: string;
  seq_key: string;
  created_at: Date;
}

/**
 * Claims up to `limit` due rows in dispatch order and leases them to `owner` for `leaseMs`.
 *
 * A row is claimable when:
 * - it is pending (not dispatched, not failed), due (`available_at`), and not leased by a live lease;
 * - its inserting transaction is older than every transaction of this database that was running at the
 *   statement's snapshot (`tx_id < GUARD_BOUND`): no transaction still running can commit a row that
 *   sorts before it later (Watermill issue 311: a sequence value is taken at insert, but the row becomes
 *   visible at commit);
 * - no earlier pending row of the same stream is leased by another replica or backing off: rows of one
 *   stream leave in order, and a replica cannot overtake another replica's in-flight batch of that
 *   stream. The caller's own leased rows do not block: they are its in-flight batch, whose XADDs are
 *   already on the connection ahead of this batch's (and a stream that failed there is released from
 *   this batch unsent, see `RowOutcome` "release").
 *
 * The caller holds `pg_advisory_xact_lock(CLAIM_LOCK_KEY)` in the same transaction: without it two
 * replicas claiming at the same instant would not see each other's leases (uncommitted) and could take
 * consecutive batches of one stream and publish them out of order. The lock is held for one statement.
 */
export function claimSql(limit: number, leaseMs: number, owner: string): string {
  return `WITH snap AS (SELECT ${GUARD_BOUND} AS xmin),
blocked AS (
  SELECT DISTINCT ON (o.stream_name) o.stream_name,
         coalesce(o.tx_id, '0'::xid8) AS k1, coalesce(o.seq, 0) AS k2, o.created_at AS k3, o.id AS k4
  FROM event_outbox o
  WHERE o.dispatched_at IS NULL AND o.failed_at IS NULL AND (o.attempts > 0 OR o.locked_until IS NOT NULL)
    AND (o.available_at > now() OR (o.locked_until > now() AND o.locked_by IS DISTINCT FROM ${escapeLiteral(owner)}))
  ORDER BY o.stream_name, ${ORDER_KEY}
),
due AS (
  SELECT o.id FROM event_outbox o, snap
  WHERE o.dispatched_at IS NULL AND o.failed_at IS NULL
    AND o.available_at <= now()
    AND (o.locked_until IS NULL OR o.locked_until <= now())
    AND (o.tx_id IS NULL OR o.tx_id < snap.xmin)
    AND NOT EXISTS (
      SELECT 1 FROM blocked b
      WHERE b.stream_name = o.stream_name AND (b.k1, b.k2, b.k3, b.k4) < (${ORDER_KEY})
    )
  ORDER BY ${ORDER_KEY}
  LIMIT ${int(limit)}
  FOR UPDATE OF o SKIP LOCKED
)
UPDATE event_outbox o SET locked_until = now() + ${int(leaseMs)} * interval '1 millisecond', locked_by = ${escapeLiteral(owner)}
FROM due WHERE o.id = due.id
RETURNING o.id, o.stream_name, o.payload_json, o.attempts,
  coalesce(o.tx_id, '0'::xid8)::text AS tx_key, coalesce(o.seq, 0)::text AS seq_key, o.created_at`;
}

/**
 * True when committed pending rows wait behind a running transaction (`tx_id >= GUARD_BOUND`): the caller
 * retries shortly instead of waiting for the next NOTIFY or poll.
 */
export const GUARDED_SQL = `SELECT coalesce((
  -- The newest pending row, read backwards from the pending index (a plain filter would scan them all).
  SELECT coalesce(o.tx_id, '0'::xid8) FROM event_outbox o
  WHERE o.dispatched_at IS NULL AND o.failed_at IS NULL
  ORDER BY coalesce(o.tx_id, '0'::xid8) DESC LIMIT 1
) >= ${GUARD_BOUND}, false) AS guarded`;

/** Outcome of one claimed row, written back with the next claim. */
export type RowOutcome =
  | { kind: "dispatched"; id: string; entryId: string }
  | { kind: "retry"; id: string; delayMs: number; error: string; failNow: boolean }
  | { kind: "failed"; id: string; error: string }
  /** Not attempted (an earlier row of its stream just failed): lease dropped, attempts unchanged. */
  | { kind: "release"; id: string };

/**
 * Writes the outcomes of a batch. Dispatched rows are marked even if their lease has passed to another
 * replica (the entry is on the stream either way); retries and failures only touch rows still leased
 * by `owner`, so they never disturb another replica's lease.
 */
export function markSql(outcomes: readonly RowOutcome[], owner: string): string[] {
  const statements: string[] = [];
  const dispatched = outcomes.filter((o) => o.kind === "dispatched");
  const retries = outcomes.filter((o) => o.kind === "retry");
  const failed = outcomes.filter((o) => o.kind === "failed");
  const released = outcomes.filter((o) => o.kind === "release");
  if (dispatched.length > 0) {
    const values = dispatched.map((o) => `(${escapeLiteral(o.id)}, ${escapeLiteral(o.entryId)})`).join(", ");
    statements.push(
      `UPDATE event_outbox o SET dispatched_at = now(), locked_until = NULL, stream_entry_id = v.entry_id
       FROM (VALUES ${values}) AS v(id, entry_id) WHERE o.id = v.id AND o.dispatched_at IS NULL`,
    );
  }
  if (retries.length > 0) {
    const values = retries
      .map((o) => `(${escapeLiteral(o.id)}, ${int(o.delayMs)}, ${escapeLiteral(truncate(o.error))}, ${o.failNow ? "TRUE" : "FALSE"})`)
      .join(", ");
    statements.push(
      `UPDATE event_outbox o SET attempts = o.attempts + 1, locked_until = NULL, last_error = v.error,
         available_at = now() + v.delay_ms * interval '1 millisecond',
         failed_at = CASE WHEN v.fail_now THEN now() END
       FROM (VALUES ${values}) AS v(id, delay_ms, error, fail_now)
       WHERE o.id = v.id AND o.dispatched_at IS NULL AND o.locked_by = ${escapeLiteral(owner)}`,
    );
  }
  if (failed.length > 0) {
    const values = failed.map((o) => `(${escapeLiteral(o.id)}, ${escapeLiteral(truncate(o.error))})`).join(", ");
    statements.push(
      `UPDATE event_outbox o SET attempts = o.attempts + 1, locked_until = NULL, last_error = v.error, failed_at = now()
       FROM (VALUES ${values}) AS v(id, error)
       WHERE o.id = v.id AND o.dispatched_at IS NULL AND o.locked_by = ${escapeLiteral(owner)}`,
    );
  }
  if (released.length > 0) {
    statements.push(
      `UPDATE event_outbox o SET locked_until = NULL
       WHERE o.id IN (${released.map((o) => escapeLiteral(o.id)).join(", ")}) AND o.dispatched_at IS NULL AND o.locked_by = ${escapeLiteral(owner)}`,
    );
  }
  return statements;
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

function int(n: number): string {
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${n}`);
  return String(n);
}

/** last_error is for humans; a huge Redis error must not bloat the row. */
function truncate(text: string): string {
  return text.length > 2000 ? `${text.slice(0, 2000)}...` : text;
}
