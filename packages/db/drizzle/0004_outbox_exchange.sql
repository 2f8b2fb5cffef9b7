-- The dispatcher's round trip as one server-side function (hand-written; see docs/outbox.md "Dispatch").
-- Adoption-safe: nothing is rewritten (DROP INDEX, a storage parameter that only applies to pages written
-- from now on, CREATE OR REPLACE FUNCTION). The DROP INDEX holds an exclusive lock on event_outbox for
-- an instant: producers' inserts wait for it, nothing fails.
--
-- The lease update (locked_until, locked_by) becomes HOT: no index references those columns any more
-- (event_outbox_inflight_idx is replaced by the ordered scan in outbox_exchange), and fillfactor leaves
-- room on each page for the leased version of its rows. A lease then writes no index entry and the
-- pending index keeps one entry per row instead of two. Cost: retained (dispatched) rows take about
-- twice the heap space; `ALTER TABLE event_outbox SET (fillfactor = 100)` trades that back.
DROP INDEX IF EXISTS "event_outbox_inflight_idx";--> statement-breakpoint
ALTER TABLE "event_outbox" SET (fillfactor = 50);--> statement-breakpoint
-- outbox_exchange(owner, claim_limit, lease_ms, outcomes of the previous batch...): writes the outcomes
-- of the previous batch, then claims up to claim_limit rows for owner, in the caller's transaction, which
-- must be its own (one statement, autocommit): it sets synchronous_commit = off and jit = off for that
-- transaction.
--
-- Returns the claimed rows in dispatch order. When claim_limit > 0 and nothing was claimed it returns one row
-- whose id is NULL and whose guarded says whether committed pending rows wait behind a running
-- transaction (the caller then retries shortly instead of waiting for a NOTIFY that may never come).
--
-- Outcomes: dispatched rows are marked even if their lease has passed to another replica (the entry is
-- on the stream either way); retries, failures and releases only touch rows still leased by owner.
--
-- Claim, under pg_advisory_xact_lock(7358120051) (the dispatcher's CLAIM_LOCK_KEY; a replica must see
-- the other replicas' committed leases before it chooses, and per-stream order across replicas rests on
-- it). Pending rows are read in dispatch order (tx_id, seq, created_at, id), NULL read as 0, from the
-- head of event_outbox_pending_idx. A row is claimable when it is due, not under a live lease, below the
-- guard bound, and no earlier pending row of its stream is leased by another replica or backing off.
-- Every row that can block a row sorts before it, so a prefix of the pending rows holds all the blockers
-- of the rows in it: the prefix read starts at 2 * claim_limit rows and grows 4-fold until it yields
-- claim_limit rows, ends, or reaches rows behind the guard (the order leads with tx_id, so every row
-- after one at or above the bound is too).
--
-- Guard bound (Watermill issue 311): the least running transaction id of a snapshot taken after the
-- lock, leaving out those known to belong to another database (they cannot write this table), else the
-- snapshot's xmax. Every transaction below it has ended, so the rows below it are all visible to the
-- later scan and the claimed rows are a prefix of the final order. A transaction that ended between the
-- snapshot and the read of pg_stat_get_activity, or that the role cannot see, still counts: the bound
-- errs on the safe side. (pg_stat_get_activity rather than the pg_stat_activity view: same rows, and
-- the view's joins cost more than the rest of the guard.)
CREATE OR REPLACE FUNCTION outbox_exchange(
  p_owner text,
  p_claim_limit integer,
  p_lease_ms integer,
  p_dispatched_ids text[],
  p_dispatched_entry_ids text[],
  p_retry_ids text[],
  p_retry_delay_ms integer[],
  p_retry_errors text[],
  p_retry_fail_now boolean[],
  p_failed_ids text[],
  p_failed_errors text[],
  p_released_ids text[]
) RETURNS TABLE (
  id text,
  stream_name text,
  payload_json jsonb,
  attempts integer,
  guarded boolean
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  v_db oid;
  v_bound xid8;
  v_window bigint := greatest(p_claim_limit, 1)::bigint * 2;
  v_seen bigint;
  v_last xid8;
  v_ids text[];
  v_claimed bigint := 0;
BEGIN
  -- Losing an outcome or a lease in a database crash only republishes rows (same outbox_id). No JIT: a
  -- widened prefix read (thousands of rows backing off) can cost enough to trigger a compilation that
  -- takes longer than the read.
  PERFORM set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true);

  IF cardinality(p_dispatched_ids) > 0 THEN
    UPDATE event_outbox o SET dispatched_at = now(), locked_until = NULL, stream_entry_id = v.entry_id
    FROM unnest(p_dispatched_ids, p_dispatched_entry_ids) AS v(id, entry_id)
    WHERE o.id = v.id AND o.dispatched_at IS NULL;
  END IF;
  IF cardinality(p_retry_ids) > 0 THEN
    UPDATE event_outbox o SET attempts = o.attempts + 1, locked_until = NULL, last_error = v.error,
      available_at = now() + v.delay_ms * interval '1 millisecond',
      failed_at = CASE WHEN v.fail_now THEN now() END
    FROM unnest(p_retry_ids, p_retry_delay_ms, p_retry_errors, p_retry_fail_now) AS v(id, delay_ms, error, fail_now)
    WHERE o.id = v.id AND o.dispatched_at IS NULL AND o.locked_by = p_owner;
  END IF;
  IF cardinality(p_failed_ids) > 0 THEN
    UPDATE event_outbox o SET attempts = o.attempts + 1, locked_until = NULL, last_error = v.error, failed_at = now()
    FROM unnest(p_failed_ids, p_failed_errors) AS v(id, error)
    WHERE o.id = v.id AND o.dispatched_at IS NULL AND o.locked_by = p_owner;
  END IF;
  IF cardinality(p_released_ids) > 0 THEN
    UPDATE event_outbox o SET locked_until = NULL
    WHERE o.id = ANY(p_released_ids) AND o.dispatched_at IS NULL AND o.locked_by = p_owner;
  END IF;
  IF p_claim_limit <= 0 THEN
    RETURN;
  END IF;

  PERFORM pg_advisory_xact_lock(7358120051);
  SELECT d.oid INTO v_db FROM pg_database d WHERE d.datname = current_database();
  SELECT coalesce(
      (SELECT min(x) FROM pg_snapshot_xip(g.snap) AS x
       WHERE x::xid NOT IN (
         SELECT a.backend_xid FROM pg_stat_get_activity(NULL) a
         WHERE a.backend_xid IS NOT NULL AND a.datid IS NOT NULL AND a.datid IS DISTINCT FROM v_db)),
      pg_snapshot_xmax(g.snap))
    INTO v_bound
    FROM (SELECT pg_current_snapshot() AS snap) g;

  LOOP
    SELECT count(*), max(h.k1),
           (array_agg(h.id ORDER BY h.k1, h.k2, h.k3, h.k4) FILTER (WHERE h.ready AND NOT h.behind))[1:p_claim_limit]
      INTO v_seen, v_last, v_ids
    FROM (
      SELECT h.id, h.k1, h.k2, h.k3, h.k4, h.ready,
             coalesce(bool_or(h.blocking) OVER (PARTITION BY h.stream_name ORDER BY h.k1, h.k2, h.k3, h.k4
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS behind
      FROM (
        SELECT o.id, o.stream_name,
               coalesce(o.tx_id, '0'::xid8) AS k1, coalesce(o.seq, 0) AS k2, o.created_at AS k3, o.id AS k4,
               -- Leased by another replica, or backing off: later rows of its stream wait.
               ((o.attempts > 0 OR o.locked_until IS NOT NULL)
                 AND (o.available_at > now() OR (o.locked_until > now() AND o.locked_by IS DISTINCT FROM p_owner))) AS blocking,
               (o.available_at <= now() AND (o.locked_until IS NULL OR o.locked_until <= now())
                 AND (o.tx_id IS NULL OR o.tx_id < v_bound)) AS ready
        FROM event_outbox o
        WHERE o.dispatched_at IS NULL AND o.failed_at IS NULL
        ORDER BY coalesce(o.tx_id, '0'::xid8), coalesce(o.seq, 0), o.created_at, o.id
        LIMIT v_window
      ) h
    ) h;
    EXIT WHEN v_seen < v_window OR coalesce(cardinality(v_ids), 0) >= p_claim_limit OR v_last >= v_bound;
    v_window := v_window * 4;
  END LOOP;

  -- SKIP LOCKED: a row another transaction holds (a replica marking a row whose lease expired) is left
  -- for later; waiting for it under the claim lock could deadlock with a replica that marks, then waits
  -- for the claim lock. The pending test is written with coalesce so that it does not match the
  -- predicate of event_outbox_pending_idx: with no statistics (a fresh or just-emptied table) the planner
  -- takes that partial index for tiny and would filter every pending row through it instead of looking
  -- the ids up in the primary key.
  RETURN QUERY
  WITH leased AS (
    UPDATE event_outbox o SET locked_until = now() + p_lease_ms * interval '1 millisecond', locked_by = p_owner
    FROM (
      SELECT e.id FROM event_outbox e
      WHERE e.id = ANY(v_ids) AND coalesce(e.dispatched_at, e.failed_at) IS NULL
        AND e.available_at <= now() AND (e.locked_until IS NULL OR e.locked_until <= now())
      FOR UPDATE SKIP LOCKED
    ) d
    WHERE o.id = d.id
    RETURNING o.id, o.stream_name, o.payload_json, o.attempts,
      coalesce(o.tx_id, '0'::xid8) AS k1, coalesce(o.seq, 0) AS k2, o.created_at AS k3
  )
  SELECT l.id, l.stream_name, l.payload_json, l.attempts, false FROM leased l ORDER BY l.k1, l.k2, l.k3, l.id;
  GET DIAGNOSTICS v_claimed = ROW_COUNT;

  IF v_claimed = 0 THEN
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::jsonb, NULL::integer,
      coalesce((
        -- The newest pending row, read backwards from the pending index.
        SELECT coalesce(o.tx_id, '0'::xid8) FROM event_outbox o
        WHERE o.dispatched_at IS NULL AND o.failed_at IS NULL
        ORDER BY coalesce(o.tx_id, '0'::xid8) DESC LIMIT 1
      ) >= v_bound, false);
  END IF;
END
$$;
