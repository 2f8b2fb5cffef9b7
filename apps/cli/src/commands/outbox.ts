/**
 * `outbox status|requeue`: the transactional outbox as the dispatcher sees it. Status counts pending
 * (due or backing off), failed (left for inspection after max attempts or a payload that can never be
 * published) and the oldest pending row per stream; requeue puts failed rows back in line
 * (`@caracal/outbox` requeue: the same statement an application would run).
 */
import { requeue, requeueCoordinatorOutbox } from "@caracal/outbox";
import type { RequeueFilter } from "@caracal/outbox";

import type { Connections } from "../config.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { formatAge, printJson, renderTable } from "../output.js";

export interface OutboxStreamStatus {
  /** `event_outbox`, or upstream's Coordinator outbox `caracal_outbox` (its failed rows are `dead`). */
  table: "event_outbox" | "caracal_outbox";
  stream: string;
  pending: number;
  /** Pending rows waiting for a retry (attempts > 0). */
  retrying: number;
  failed: number;
  oldestPendingAgeSeconds: number | null;
  oldestFailedAgeSeconds: number | null;
  lastError: string | null;
}

export async function collectOutboxStatus(conn: Connections): Promise<OutboxStreamStatus[]> {
  const { rows } = await conn.pool().query<{
    stream: string;
    pending: string;
    retrying: string;
    failed: string;
    oldest_pending: number | null;
    oldest_failed: number | null;
    last_error: string | null;
  }>(
    `SELECT stream_name AS stream,
            count(*) FILTER (WHERE failed_at IS NULL) AS pending,
            count(*) FILTER (WHERE failed_at IS NULL AND attempts > 0) AS retrying,
            count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed,
            extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL))::float8 AS oldest_pending,
            extract(epoch FROM now() - min(failed_at) FILTER (WHERE failed_at IS NOT NULL))::float8 AS oldest_failed,
            (array_agg(last_error ORDER BY coalesce(failed_at, created_at) DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error
       FROM event_outbox
      WHERE dispatched_at IS NULL
      GROUP BY stream_name
      ORDER BY stream_name`,
  );
  const coordinator = await collectCoordinatorOutboxStatus(conn);
  return [
    ...rows.map((r): OutboxStreamStatus => ({
      table: "event_outbox",
      stream: r.stream,
      pending: Number(r.pending),
      retrying: Number(r.retrying),
      failed: Number(r.failed),
      oldestPendingAgeSeconds: r.oldest_pending,
      oldestFailedAgeSeconds: r.oldest_failed,
      lastError: r.last_error,
    })),
    ...coordinator,
  ];
}

/** The same per stream (`topic`) for `caracal_outbox`, where it exists. */
async function collectCoordinatorOutboxStatus(conn: Connections): Promise<OutboxStreamStatus[]> {
  const exists = await conn.pool().query<{ ok: boolean }>("SELECT to_regclass('caracal_outbox') IS NOT NULL AS ok");
  if (exists.rows[0]?.ok !== true) return [];
  const { rows } = await conn.pool().query<{ stream: string; pending: string; retrying: string; failed: string; oldest_pending: number | null; oldest_failed: number | null; last_error: string | null }>(
    `SELECT topic AS stream,
            count(*) FILTER (WHERE status = 'pending') AS pending,
            count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS retrying,
            count(*) FILTER (WHERE status = 'dead') AS failed,
            extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8 AS oldest_pending,
            extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'dead'))::float8 AS oldest_failed,
            (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error
       FROM caracal_outbox WHERE status <> 'published' GROUP BY topic ORDER BY topic`,
  );
  return rows.map((r) => ({
    table: "caracal_outbox",
    stream: r.stream,
    pending: Number(r.pending),
    retrying: Number(r.retrying),
    failed: Number(r.failed),
    oldestPendingAgeSeconds: r.oldest_pending,
    oldestFailedAgeSeconds: r.oldest_failed,
    lastError: r.last_error,
  }));
}

export async function outboxStatus(conn: Connections, io: Io, options: { json?: boolean }): Promise<void> {
  const status = await collectOutboxStatus(conn);
  if (options.json) return printJson(io, status);
  if (status.length === 0) return io.out("event_outbox and caracal_outbox: nothing pending or failed");
  io.out(
    renderTable(
      io,
      ["table", "stream", "pending", "retrying", "oldest pending", "failed", "oldest failed", "last error"],
      status.map((s) => [s.table, s.stream, s.pending, s.retrying, formatAge(s.oldestPendingAgeSeconds ?? undefined), s.failed, formatAge(s.oldestFailedAgeSeconds ?? undefined), s.lastError ?? ""]),
    ),
  );
}

/** "90s", "15m", "2h", "7d" → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (m === null) throw new CliError(`not a duration: ${JSON.stringify(text)} (use e.g. 90s, 15m, 2h, 7d)`, ExitCode.usage);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms" | "s" | "m" | "h" | "d"];
  return Number(m[1]) * unit;
}

export async function outboxRequeue(
  conn: Connections,
  io: Io,
  options: { ids?: string[]; stream?: string; olderThan?: string; allFailed?: boolean; json?: boolean },
): Promise<number> {
  const hasIds = options.ids !== undefined && options.ids.length > 0;
  let filter: RequeueFilter;
  if (hasIds) {
    if (options.stream !== undefined || options.olderThan !== undefined || options.allFailed) throw new CliError("--id cannot be combined with other filters", ExitCode.usage);
    filter = { ids: options.ids! };
  } else if (options.olderThan !== undefined) {
    const failedBefore = new Date(Date.now() - parseDuration(options.olderThan));
    filter = options.stream === undefined ? { failedBefore } : { failedBefore, stream: options.stream };
  } else if (options.stream !== undefined) filter = { stream: options.stream };
  else if (options.allFailed) filter = { allFailed: true };
  else throw new CliError("requeue needs --id <id> (repeatable), --stream <stream>, --older-than <age> or --all-failed", ExitCode.usage);
  const events = await requeue(conn.pool(), filter);
  const coordinator = await requeueCoordinatorOutbox(conn.pool(), filter);
  const n = events + coordinator;
  if (options.json) printJson(io, { requeued: n, event_outbox: events, caracal_outbox: coordinator });
  else io.out(`${n} failed row(s) requeued (event_outbox ${events}, caracal_outbox ${coordinator})`);
  return n;
}
