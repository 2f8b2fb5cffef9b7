import type { OutboxTx } from "./executor.js";
import { run } from "./executor.js";
import { OUTBOX_CHANNEL } from "./fields.js";

/**
 * Which failed rows to requeue: by id, by stream, every failed row, or those that failed before a time
 * (optionally of one stream).
 */
export type RequeueFilter = { ids: readonly string[] } | { stream: string } | { allFailed: true } | { failedBefore: Date; stream?: string };

/**
 * Puts failed rows back in line (operator action): `failed_at` cleared, `attempts` reset to 0, due now.
 * `last_error` is kept as the record of the earlier failure until the next attempt overwrites it.
 * A requeued row keeps its place key, so it leaves before later rows of its stream that are still
 * pending, but after those already dispatched: it also bumps `event_outbox_rescan.requeues`, which sends
 * the next claims back to the start of the pending index (migration 0006). Notifies the dispatchers.
 * Returns the number of rows.
 */
export async function requeue(tx: OutboxTx, filter: RequeueFilter): Promise<number> {
  let where: string;
  let values: unknown[];
  if ("ids" in filter) {
    where = "id = ANY($1::text[])";
    values = [[...filter.ids]];
  } else if ("failedBefore" in filter) {
    where = filter.stream === undefined ? "failed_at < $1" : "failed_at < $1 AND stream_name = $2";
    values = filter.stream === undefined ? [filter.failedBefore] : [filter.failedBefore, filter.stream];
  } else if ("stream" in filter) {
    where = "stream_name = $1";
    values = [filter.stream];
  } else {
    where = "TRUE";
    values = [];
  }
  const rows = await run(
    tx,
    `WITH upd AS (
       UPDATE event_outbox SET failed_at = NULL, attempts = 0, available_at = now(), locked_until = NULL, locked_by = NULL
       WHERE failed_at IS NOT NULL AND dispatched_at IS NULL AND ${where} RETURNING 1
     ), rescan AS (
       UPDATE event_outbox_rescan SET requeues = requeues + 1 WHERE EXISTS (SELECT FROM upd) RETURNING 1
     ) SELECT count(*)::int AS n, pg_notify('${OUTBOX_CHANNEL}', '') FROM upd`,
    values,
  );
  return Number(rows[0]?.n ?? 0);
}

/**
 * `requeue` for upstream's second outbox, `caracal_outbox` (its Coordinator's): dead rows matching the
 * filter back to `pending`, attempts reset, due now (`stream` is the row's `topic`; `failedBefore` its
 * last update). `last_error` is kept until the next attempt. Returns 0 where the table does not exist.
 */
export async function requeueCoordinatorOutbox(tx: OutboxTx, filter: RequeueFilter): Promise<number> {
  const exists = await run(tx, "SELECT to_regclass('caracal_outbox') IS NOT NULL AS ok", []);
  if (exists[0]?.ok !== true) return 0;
  let where: string;
  let values: unknown[];
  if ("ids" in filter) {
    where = "id = ANY($1::text[])";
    values = [[...filter.ids]];
  } else if ("failedBefore" in filter) {
    where = filter.stream === undefined ? "updated_at < $1" : "updated_at < $1 AND topic = $2";
    values = filter.stream === undefined ? [filter.failedBefore] : [filter.failedBefore, filter.stream];
  } else if ("stream" in filter) {
    where = "topic = $1";
    values = [filter.stream];
  } else {
    where = "TRUE";
    values = [];
  }
  const rows = await run(
    tx,
    `WITH upd AS (
       UPDATE caracal_outbox SET status = 'pending', attempts = 0, available_at = now(), updated_at = now()
       WHERE status = 'dead' AND ${where} RETURNING 1
     ) SELECT count(*)::int AS n, pg_notify('${OUTBOX_CHANNEL}', '') FROM upd`,
    values,
  );
  return Number(rows[0]?.n ?? 0);
}
