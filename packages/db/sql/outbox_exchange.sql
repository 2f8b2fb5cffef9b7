-- outbox_exchange: the outbox dispatcher's one statement per batch (write the previous batch's outcomes,
-- claim the next batch under a lease). THE ONE SOURCE of the function: a migration never edits it by hand.
-- To change it: edit this file, then `pnpm --filter @caracal/db migration:outbox-exchange <name>`, which
-- writes the next migration as a copy of this file (CREATE OR REPLACE: adoption-safe, same signature).
-- A test (src/outbox-exchange-source.test.ts) fails while the newest migration's copy differs from it.
-- Contract with apps/outbox-dispatcher/src/sql.ts: the parameters and result columns below, and the
-- advisory lock key 7358120051 (CLAIM_LOCK_KEY there). Ordering and lease rules: docs/outbox.md.
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
  v_bound xid8;
  v_window bigint := greatest(p_claim_limit, 1)::bigint * 2;
  v_seen bigint;
  v_last xid8;
  v_ids text[];
  v_claimed bigint := 0;
  v_requeues bigint;
  v_from text := current_setting('caracal.outbox_scan_from', true);
  v_from_tx xid8 := '0';
  v_from_seq bigint := -9223372036854775808;
  v_head_tx xid8;
  v_head_seq bigint;
  v_from_full_at bigint;
BEGIN
  -- Losing an outcome or a lease in a database crash only republishes rows (same outbox_id). No JIT: a
  -- widened prefix read (thousands of rows backing off) can cost enough to trigger a compilation that
  -- takes longer than the read. No bitmap scans: see the header of migration 0005. Where the scan starts:
  -- see the header of migration 0006.
  PERFORM set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true), set_config('enable_bitmapscan', 'off', true);

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
  SELECT coalesce(
      (SELECT min(x) FROM pg_snapshot_xip(g.snap) AS x
       WHERE x::xid NOT IN (
         SELECT a.backend_xid FROM pg_stat_get_activity(NULL) a
         WHERE a.backend_xid IS NOT NULL AND a.datid IS NOT NULL
           AND a.datid IS DISTINCT FROM (SELECT d.oid FROM pg_database d WHERE d.datname = current_database()))),
      pg_snapshot_xmax(g.snap)),
      (SELECT r.requeues FROM event_outbox_rescan r)
    INTO v_bound, v_requeues
    FROM (SELECT pg_current_snapshot() AS snap) g;

  -- The previous scan's start key, if still trusted: no requeue since, and taken less than a second ago
  -- (anything else in the setting, a value set by hand say, is ignored).
  IF v_requeues IS NOT NULL AND coalesce(v_from, '') ~ '^[0-9]{1,20} -?[0-9]{1,19} [0-9]{1,19} [0-9]{1,19}$'
     AND split_part(v_from, ' ', 3)::bigint = v_requeues
     AND extract(epoch FROM clock_timestamp()) * 1000 - split_part(v_from, ' ', 4)::float8 BETWEEN 0 AND 1000 THEN
    v_from_tx := split_part(v_from, ' ', 1)::xid8;
    v_from_seq := split_part(v_from, ' ', 2)::bigint;
    v_from_full_at := split_part(v_from, ' ', 4)::bigint;
  END IF;

  LOOP
    SELECT min(h.k1), min(h.k2) FILTER (WHERE h.k1 = h.head_k1), count(*), max(h.k1),
           (array_agg(h.id ORDER BY h.k1, h.k2, h.k3, h.k4) FILTER (WHERE h.ready AND NOT h.behind))[1:p_claim_limit]
      INTO v_head_tx, v_head_seq, v_seen, v_last, v_ids
    FROM (
      SELECT h.id, h.k1, h.k2, h.k3, h.k4, h.ready, min(h.k1) OVER () AS head_k1,
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
          AND (coalesce(o.tx_id, '0'::xid8), coalesce(o.seq, 0)) >= (v_from_tx, v_from_seq)
        ORDER BY coalesce(o.tx_id, '0'::xid8), coalesce(o.seq, 0), o.created_at, o.id
        LIMIT v_window
      ) h
    ) h;
    EXIT WHEN v_seen < v_window OR coalesce(cardinality(v_ids), 0) >= p_claim_limit OR v_last >= v_bound;
    v_window := v_window * 4;
  END LOOP;

  -- The next scan's start: the lower of this scan's first pending row and (bound, -inf), below which no
  -- row can commit from now on; with the time of the last scan from the head of the index (a start
  -- derived from a start is trusted only as long as the first one). Rolled back with this transaction
  -- if it fails.
  PERFORM set_config('caracal.outbox_scan_from',
    CASE
      WHEN v_requeues IS NULL THEN ''
      WHEN v_head_tx IS NULL OR v_bound <= v_head_tx THEN v_bound::text || ' -9223372036854775808'
      ELSE v_head_tx::text || ' ' || v_head_seq::text
    END || ' ' || coalesce(v_requeues::text, '') || ' '
      || coalesce(v_from_full_at, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)::text,
    false);

  -- SKIP LOCKED: a row another transaction holds (a replica marking a row whose lease expired) is left
  -- for later; waiting for it under the claim lock could deadlock with a replica that marks, then waits
  -- for the claim lock. The pending test is written with coalesce so that it does not match the
  -- predicate of event_outbox_pending_idx: with no statistics (a fresh or just-emptied table) the planner
  -- takes that partial index for tiny and would filter every pending row through it instead of looking
  -- the ids up in the primary key.
  RETURN QUERY
  WITH leased AS (
    UPDATE event_outbox o SET locked_until = now() + p_lease_ms * interval '1 millisecond', locked_by = p_owner
    WHERE o.ctid = ANY(ARRAY(
      SELECT e.ctid FROM event_outbox e
      WHERE e.id = ANY(v_ids) AND coalesce(e.dispatched_at, e.failed_at) IS NULL
        AND e.available_at <= now() AND (e.locked_until IS NULL OR e.locked_until <= now())
      FOR UPDATE SKIP LOCKED))
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
