/**
 * Derived state in PostgreSQL, written once per consumer batch: one transaction per batch, one statement
 * per table. Duplicates (same `outbox_id`, `dedupe_key` or entry id on a stream) are dropped by the
 * observed_dedupe insert in the same transaction as the effect, so a crash between them cannot lose one.
 */
import type { Fields, StreamMessage } from "@caracal/streams-core";
import type pg from "pg";

export interface ObservedEvent {
  stream: string;
  streamId: string;
  zoneId: string | undefined;
  event: string | undefined;
  fields: Readonly<Fields>;
  /** RFC 3339 with at most microseconds (what PostgreSQL stores), and its epoch ms for ordering in JS. */
  occurredAt: string;
  occurredMs: number;
}

/** The dedupe key of an entry: `outbox_id`, else `dedupe_key`, else the stream entry id. */
export function dedupeKey(stream: string, id: string, fields: Readonly<Fields>): string {
  if (fields.outbox_id) return `outbox:${fields.outbox_id}`;
  if (fields.dedupe_key) return `key:${fields.dedupe_key}`;
  return `id:${stream}:${id}`;
}

/** Milliseconds of a stream entry id (`<ms>-<seq>`). */
export function entryIdMs(id: string): number {
  return Number(id.split("-")[0]);
}

/** Compares two stream entry ids numerically. */
export function compareEntryIds(a: string, b: string): number {
  const [am = "0", as = "0"] = a.split("-");
  const [bm = "0", bs = "0"] = b.split("-");
  const d = BigInt(am) - BigInt(bm);
  if (d !== 0n) return d < 0n ? -1 : 1;
  const s = BigInt(as) - BigInt(bs);
  return s === 0n ? 0 : s < 0n ? -1 : 1;
}

/**
 * The event's time: `occurred_at` when it parses (nanoseconds cut to microseconds, offsets kept), else
 * the time Redis gave the entry.
 */
export function occurredAtOf(id: string, fields: Readonly<Fields>): { occurredAt: string; occurredMs: number } {
  const raw = fields.occurred_at;
  if (raw) {
    const cut = raw.replace(/(\.\d{6})\d+/, "$1");
    const ms = Date.parse(cut);
    if (Number.isFinite(ms)) return { occurredAt: cut, occurredMs: ms };
  }
  const ms = entryIdMs(id);
  return { occurredAt: new Date(ms).toISOString(), occurredMs: ms };
}

export function toObserved(stream: string, m: StreamMessage<unknown>, event: string | undefined, zoneId: string | undefined): ObservedEvent {
  return { stream, streamId: m.id, zoneId, event, fields: m.fields, ...occurredAtOf(m.id, m.fields) };
}

const later = (a: ObservedEvent, b: ObservedEvent) => a.occurredMs > b.occurredMs || (a.occurredMs === b.occurredMs && compareEntryIds(a.streamId, b.streamId) > 0);

/** Recorded in the transaction of a batch, after duplicates are dropped. */
export type StateApplier = (client: pg.PoolClient, fresh: readonly ObservedEvent[]) => Promise<void>;

export class StateStore {
  constructor(
    private readonly pool: pg.Pool,
    private readonly recentPerStream: number,
  ) {}

  /**
   * Drops duplicates, applies `apply` to the fresh events, records them as recent events and trims the
   * stream's recent events; all in one transaction. Returns the fresh events.
   */
  async applyBatch(stream: string, keyed: readonly { key: string; event: ObservedEvent }[], apply: StateApplier): Promise<ObservedEvent[]> {
    if (keyed.length === 0) return [];
    const firstByKey = new Map<string, ObservedEvent>();
    for (const k of keyed) if (!firstByKey.has(k.key)) firstByKey.set(k.key, k.event);
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const inserted = await client.query<{ key: string }>(
        "INSERT INTO observed_dedupe (stream, key) SELECT $1, k FROM unnest($2::text[]) AS k ON CONFLICT DO NOTHING RETURNING key",
        [stream, [...firstByKey.keys()]],
      );
      const fresh = inserted.rows.map((r) => firstByKey.get(r.key)!).sort((a, b) => compareEntryIds(a.streamId, b.streamId));
      if (fresh.length > 0) {
        await apply(client, fresh);
        await client.query(
          `INSERT INTO observed_events (stream, zone_id, stream_id, event, fields)
           SELECT $1, z, i, e, f FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[]) AS t(z, i, e, f)`,
          [stream, fresh.map((e) => e.zoneId ?? null), fresh.map((e) => e.streamId), fresh.map((e) => e.event ?? null), fresh.map((e) => JSON.stringify(e.fields))],
        );
        await client.query(
          `DELETE FROM observed_events WHERE stream = $1 AND seq <= (
             SELECT seq FROM observed_events WHERE stream = $1 ORDER BY seq DESC OFFSET $2 LIMIT 1)`,
          [stream, this.recentPerStream],
        );
      }
      await client.query("COMMIT");
      return fresh;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }
}

/**
 * Agent sessions: one history row per event; the session row moves to the latest event by `occurred_at`
 * (ties by entry id), and once `terminate` is stored nothing moves it. A late `terminate` still applies.
 */
export const applyAgentSessions: StateApplier = async (client, fresh) => {
  const session = (e: ObservedEvent) => e.fields.agent_session_id ?? "";
  const best = new Map<string, ObservedEvent>();
  for (const e of fresh) {
    const k = `${e.zoneId}\u0000${session(e)}`;
    const cur = best.get(k);
    if (cur === undefined) best.set(k, e);
    else if (cur.event === "terminate") continue;
    else if (e.event === "terminate" || later(e, cur)) best.set(k, e);
  }
  await client.query(
    `INSERT INTO observed_agent_session_events (zone_id, agent_session_id, event, occurred_at, stream_id, fields)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::jsonb[])
     ON CONFLICT DO NOTHING`,
    [fresh.map((e) => e.zoneId), fresh.map(session), fresh.map((e) => e.event), fresh.map((e) => e.occurredAt), fresh.map((e) => e.streamId), fresh.map((e) => JSON.stringify(e.fields))],
  );
  const rows = [...best.values()];
  await client.query(
    `INSERT INTO observed_agent_sessions AS s (zone_id, agent_session_id, status, occurred_at, stream_id)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
     ON CONFLICT (zone_id, agent_session_id) DO UPDATE
       SET status = excluded.status, occurred_at = excluded.occurred_at, stream_id = excluded.stream_id, updated_at = now()
       WHERE s.status <> 'terminate' AND (excluded.status = 'terminate' OR excluded.occurred_at > s.occurred_at
         OR (excluded.occurred_at = s.occurred_at AND
             (split_part(excluded.stream_id, '-', 1)::numeric, split_part(excluded.stream_id, '-', 2)::numeric)
             > (split_part(s.stream_id, '-', 1)::numeric, split_part(s.stream_id, '-', 2)::numeric)))`,
    [rows.map((e) => e.zoneId), rows.map(session), rows.map((e) => e.event), rows.map((e) => e.occurredAt), rows.map((e) => e.streamId)],
  );
};

/** Events after which an invocation is no longer in flight. */
const FINISHED = new Set(["completed", "failed", "timed_out", "cancelled", "canceled", "rejected", "expired"]);

/** `invocation.completed` → `completed`; every unfinished event → `running`. */
export function invocationState(event: string): string {
  const suffix = event.replace(/^invocation\./, "");
  return FINISHED.has(suffix) ? suffix : "running";
}

/**
 * Invocations: first event time is the start, the first finishing event is final (its state and
 * duration stay), otherwise the latest event by time sets the state.
 */
export const applyInvocations: StateApplier = async (client, fresh) => {
  interface Row { zone: string; id: string; service: string | null; state: string; last: ObservedEvent; startedMs: number; startedAt: string; finished: ObservedEvent | undefined }
  const rows = new Map<string, Row>();
  for (const e of fresh) {
    const id = e.fields.invocation_id ?? "";
    const k = `${e.zoneId}\u0000${id}`;
    const state = invocationState(e.event ?? "");
    const finished = state === "running" ? undefined : e;
    const r = rows.get(k);
    if (r === undefined) {
      rows.set(k, { zone: e.zoneId ?? "", id, service: e.fields.service_id || null, state, last: e, startedMs: e.occurredMs, startedAt: e.occurredAt, finished });
      continue;
    }
    if (e.fields.service_id) r.service = e.fields.service_id;
    if (e.occurredMs < r.startedMs) { r.startedMs = e.occurredMs; r.startedAt = e.occurredAt; }
    if (r.finished === undefined && finished !== undefined) { r.finished = finished; r.state = state; r.last = e; }
    else if (r.finished === undefined && later(e, r.last)) { r.state = state; r.last = e; }
  }
  const list = [...rows.values()];
  await client.query(
    `INSERT INTO observed_invocations AS i (zone_id, invocation_id, service_id, state, last_event, started_at, last_at, finished_at, duration_ms)
     SELECT z, id, sv, st, le, sa, la, fa,
            CASE WHEN fa IS NULL THEN NULL ELSE (extract(epoch FROM fa - sa) * 1000)::bigint END
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[])
         AS t(z, id, sv, st, le, sa, la, fa)
     ON CONFLICT (zone_id, invocation_id) DO UPDATE SET
       service_id = coalesce(excluded.service_id, i.service_id),
       state = CASE WHEN i.finished_at IS NOT NULL THEN i.state
                    WHEN excluded.finished_at IS NOT NULL OR excluded.last_at >= i.last_at THEN excluded.state ELSE i.state END,
       last_event = CASE WHEN i.finished_at IS NOT NULL THEN i.last_event
                    WHEN excluded.finished_at IS NOT NULL OR excluded.last_at >= i.last_at THEN excluded.last_event ELSE i.last_event END,
       started_at = least(i.started_at, excluded.started_at),
       last_at = greatest(i.last_at, excluded.last_at),
       finished_at = coalesce(i.finished_at, excluded.finished_at),
       duration_ms = CASE WHEN coalesce(i.finished_at, excluded.finished_at) IS NULL THEN NULL
                     ELSE (extract(epoch FROM coalesce(i.finished_at, excluded.finished_at) - least(i.started_at, excluded.started_at)) * 1000)::bigint END`,
    [
      list.map((r) => r.zone), list.map((r) => r.id), list.map((r) => r.service), list.map((r) => r.state), list.map((r) => r.last.event),
      list.map((r) => r.startedAt), list.map((r) => r.last.occurredAt), list.map((r) => r.finished?.occurredAt ?? null),
    ],
  );
};

/** Delegation epochs: the highest epoch seen per zone; never moves backwards. */
export const applyDelegationEpochs: StateApplier = async (client, fresh) => {
  const best = new Map<string, ObservedEvent>();
  for (const e of fresh) {
    const cur = best.get(e.zoneId ?? "");
    if (cur === undefined || BigInt(e.fields.epoch ?? "0") > BigInt(cur.fields.epoch ?? "0")) best.set(e.zoneId ?? "", e);
  }
  const list = [...best.values()];
  await client.query(
    `INSERT INTO observed_delegation_epochs AS d (zone_id, epoch, last_event, stream_id)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
     ON CONFLICT (zone_id) DO UPDATE SET epoch = excluded.epoch, last_event = excluded.last_event, stream_id = excluded.stream_id, updated_at = now()
       WHERE excluded.epoch > d.epoch`,
    [list.map((e) => e.zoneId), list.map((e) => e.fields.epoch), list.map((e) => e.event), list.map((e) => e.streamId)],
  );
};

/** Recent events only (dead-letter observers): nothing derived beyond observed_events. */
export const applyNothing: StateApplier = async () => undefined;
