/**
 * The ledger writer (WIRE §7): one transaction per batch, a per-zone advisory lock inside it, a
 * multi-row INSERT built from arrays (`unnest`), idempotent on `id`.
 *
 * Invariants:
 * - `chain_seq` is 1, 2, 3, ... per zone with no gap: duplicates are found (under the zone lock) before any
 *   seq is assigned, and if the INSERT still skips a row (a concurrent insert of the same id into another
 *   zone, which holds a different lock) the whole transaction is rolled back and retried.
 * - Zone locks are taken in ascending order of their lock key (not of the zone name: two zones may share a
 *   key), in one statement, so two replicas never deadlock.
 * - A redelivered event (same id, same content_sha256) is a no-op; the same id with other content is
 *   tampering: an alert row is committed and the entry is rejected with `tamper_on_replay`.
 * - Producer-chain forks and broken links set `tamper_detected` (on the new row and on the stored row they
 *   contradict) and write alerts; gaps are left to the sweeper (the missing event may still be redelivered).
 */
import { createHash } from "node:crypto";

import type { AuditEvent } from "@caracal/streams-core";
import { RejectedMessageError } from "@caracal/streams-core";
import type pg from "pg";

import { chainLink, contentSha256 } from "./content.js";

/** One event to store. `key` identifies it to the caller (a stream entry id, or a replay file line). */
export interface LedgerInput {
  readonly key: string;
  /** The event as validated by the audit event schema. */
  readonly event: AuditEvent;
  /** The `data` text exactly as received (stored as `payload_json`, hashed after a plain JSON parse). */
  readonly data: string;
  readonly sig: string | undefined;
  readonly streamEntryId: string | undefined;
}

export type TamperKind = "tamper_on_replay" | "fork" | "broken_link";

export interface TamperAlert {
  readonly zoneId: string;
  readonly eventId: string;
  readonly kind: TamperKind;
  readonly detail: Record<string, unknown>;
}

export interface BatchResult {
  /** Rows inserted by this call. */
  readonly inserted: number;
  /** Entries that were already stored with identical content (or repeated in the batch): no-ops. */
  readonly duplicates: number;
  /** Entries the caller must dead-letter (by `key`), e.g. `tamper_on_replay`. */
  readonly rejected: ReadonlyMap<string, RejectedMessageError>;
  /** Alerts written in the batch transaction. */
  readonly alerts: readonly TamperAlert[];
}

export interface LedgerWriterOptions {
  pool: pg.Pool;
  /** AUDIT_HMAC_KEY; undefined in dev (unkeyed chain). */
  auditKey: Buffer | undefined;
  /** Attempts when a concurrent insert of the same id is detected. Default 5. */
  maxConflictRetries?: number;
}

/** Class id of the zone locks in PostgreSQL's two-int advisory lock space ("AUDT"). */
export const ZONE_LOCK_CLASS = 0x41554454;

/** The int4 advisory lock key of a zone: the first 4 bytes of SHA-256(zone_id), signed. */
export function zoneLockKey(zoneId: string): number {
  return createHash("sha256").update(zoneId, "utf8").digest().readInt32BE(0);
}

const INSERT_SQL = `
INSERT INTO audit_events (
  id, zone_id, event_type, actor_id, resource_id, decision, evaluation_status, request_id,
  policy_set_id, policy_set_version_id, manifest_sha, payload_json, determining_policies_json,
  diagnostics_json, metadata_json, hmac_chain, tamper_detected, occurred_at, chain_seq, content_sha256,
  sig, producer_id, producer_seq, producer_prev, stream_entry_id
)
SELECT u.id, u.zone_id, u.event_type, u.actor_id, u.resource_id, u.decision, u.evaluation_status, u.request_id,
  u.policy_set_id, u.policy_set_version_id, u.manifest_sha, j.p, j.p->'determining_policies_json',
  j.p->'diagnostics_json', j.p->'metadata_json', u.hmac_chain, u.tamper, u.occurred_at::timestamptz,
  u.chain_seq, u.content_sha256, u.sig, u.producer_id, u.producer_seq, u.producer_prev, u.stream_entry_id
FROM unnest(
  $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
  $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bool[], $15::text[], $16::bigint[],
  $17::text[], $18::text[], $19::text[], $20::bigint[], $21::text[], $22::text[]
) AS u(id, zone_id, event_type, actor_id, resource_id, decision, evaluation_status, request_id,
  policy_set_id, policy_set_version_id, manifest_sha, payload, hmac_chain, tamper, occurred_at, chain_seq,
  content_sha256, sig, producer_id, producer_seq, producer_prev, stream_entry_id)
CROSS JOIN LATERAL (SELECT u.payload::jsonb AS p) AS j
ON CONFLICT (id) DO NOTHING
RETURNING id`;

const ALERT_SQL = `
INSERT INTO audit_tamper_alerts (zone_id, event_id, kind, detail)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])`;

/** Raised (and retried) when the INSERT skipped a row that the duplicate check did not see. */
class ConcurrentInsertError extends Error {}

interface Prepared {
  readonly input: LedgerInput;
  readonly contentSha: string;
}

interface NewRow {
  readonly input: LedgerInput;
  readonly contentSha: string;
  tamper: boolean;
  chainSeq: number;
  hmacChain: string;
}

/** Columns derived from the event; the sweeper checks stored columns against the same derivation. */
export function actorIdOf(event: Record<string, unknown>): string | null {
  const meta = event.metadata_json as Record<string, unknown> | undefined;
  const v = event.actor_id ?? meta?.actor_id ?? meta?.subject ?? meta?.application_id;
  return typeof v === "string" ? v : null;
}

export function resourceIdOf(event: Record<string, unknown>): string | null {
  const meta = event.metadata_json as Record<string, unknown> | undefined;
  const v = event.resource_id ?? meta?.resource_id ?? meta?.resource;
  return typeof v === "string" ? v : null;
}

export class LedgerWriter {
  private readonly pool: pg.Pool;
  private readonly auditKey: Buffer | undefined;
  private readonly maxConflictRetries: number;

  constructor(options: LedgerWriterOptions) {
    this.pool = options.pool;
    this.auditKey = options.auditKey;
    this.maxConflictRetries = options.maxConflictRetries ?? 5;
  }

  /**
   * Stores a batch in one transaction. Throws on a database failure (nothing of the batch is stored then:
   * the caller leaves the entries pending). Throws RejectedMessageError("parse_error") never: entries whose
   * data has no canonical form are returned in `rejected`.
   */
  async writeBatch(inputs: readonly LedgerInput[]): Promise<BatchResult> {
    const rejected = new Map<string, RejectedMessageError>();
    const prepared: Prepared[] = [];
    for (const input of inputs) {
      try {
        prepared.push({ input, contentSha: contentSha256(JSON.parse(input.data)) });
      } catch (error) {
        rejected.set(input.key, error instanceof RejectedMessageError ? error : new RejectedMessageError("parse_error", String(error)));
      }
    }
    if (prepared.length === 0) return { inserted: 0, duplicates: 0, rejected, alerts: [] };
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await this.writeOnce(prepared);
        for (const [k, v] of rejected) result.rejected.set(k, v);
        return result;
      } catch (error) {
        if (!(error instanceof ConcurrentInsertError) || attempt >= this.maxConflictRetries) throw error;
      }
    }
  }

  private async writeOnce(prepared: readonly Prepared[]): Promise<BatchResult & { rejected: Map<string, RejectedMessageError> }> {
    const rejected = new Map<string, RejectedMessageError>();
    const alerts: TamperAlert[] = [];
    let duplicates = 0;

    // Within the batch: the first occurrence of an id wins; a repeat with equal content is a no-op.
    const firstById = new Map<string, Prepared>();
    const unique: Prepared[] = [];
    for (const p of prepared) {
      const first = firstById.get(p.input.event.id);
      if (first === undefined) {
        firstById.set(p.input.event.id, p);
        unique.push(p);
      } else if (first.contentSha === p.contentSha) {
        duplicates++;
      } else {
        alerts.push(replayAlert(p, first.contentSha));
        rejected.set(p.input.key, replayError(p.input.event.id));
      }
    }

    const client = await this.pool.connect();
    let released = false;
    try {
      const lockKeys = [...new Set(unique.map((p) => zoneLockKey(p.input.event.zone_id)))].sort((a, b) => a - b);
      // One simple-protocol round trip: BEGIN and every zone lock, in ascending key order (unnest keeps
      // array order). Keys are integers computed here, so inlining them is safe.
      await client.query(
        `BEGIN; SELECT pg_advisory_xact_lock(${ZONE_LOCK_CLASS}, k) FROM unnest(ARRAY[${lockKeys.join(",")}]::int[]) AS k`,
      );

      // Under the locks, read what is already stored (READ COMMITTED: this statement sees every commit
      // made by the previous holder of each zone lock).
      const ids = unique.map((p) => p.input.event.id);
      const existing = await client.query<{ id: string; content_sha256: string }>(
        "SELECT id, content_sha256 FROM audit_events WHERE id = ANY($1::text[])",
        [ids],
      );
      const storedSha = new Map(existing.rows.map((r) => [r.id, r.content_sha256]));
      const fresh: NewRow[] = [];
      for (const p of unique) {
        const stored = storedSha.get(p.input.event.id);
        if (stored === undefined) fresh.push({ input: p.input, contentSha: p.contentSha, tamper: false, chainSeq: 0, hmacChain: "" });
        else if (stored === p.contentSha) duplicates++;
        else {
          alerts.push(replayAlert(p, stored));
          rejected.set(p.input.key, replayError(p.input.event.id));
        }
      }

      let inserted = 0;
      if (fresh.length > 0) {
        await this.checkProducerChains(client, fresh, alerts);
        await this.assignChain(client, fresh);
        inserted = await this.insertRows(client, fresh);
        if (inserted !== fresh.length) throw new ConcurrentInsertError(`inserted ${inserted} of ${fresh.length} rows`);
      }
      if (alerts.length > 0) {
        await client.query(ALERT_SQL, [
          alerts.map((a) => a.zoneId),
          alerts.map((a) => a.eventId),
          alerts.map((a) => a.kind),
          alerts.map((a) => JSON.stringify(a.detail)),
        ]);
      }
      await client.query("COMMIT");
      return { inserted, duplicates, rejected, alerts };
    } catch (error) {
      try {
        await client.query("ROLLBACK");
      } catch {
        // the connection is broken: discard it rather than return it to the pool
        client.release(true);
        released = true;
      }
      throw error;
    } finally {
      if (!released) client.release();
    }
  }

  /** Reads each zone's head (under its lock) and assigns `chain_seq` / `hmac_chain` in batch order. */
  private async assignChain(client: pg.PoolClient, rows: NewRow[]): Promise<void> {
    const zones = [...new Set(rows.map((r) => r.input.event.zone_id))];
    const heads = await client.query<{ zone_id: string; chain_seq: string | null; hmac_chain: string | null }>(
      `SELECT z.zone_id, h.chain_seq, h.hmac_chain
         FROM unnest($1::text[]) AS z(zone_id)
         LEFT JOIN LATERAL (
           SELECT chain_seq, hmac_chain FROM audit_events e
            WHERE e.zone_id = z.zone_id ORDER BY chain_seq DESC LIMIT 1
         ) h ON true`,
      [zones],
    );
    const head = new Map<string, { seq: number; chain: string }>();
    for (const r of heads.rows) head.set(r.zone_id, { seq: r.chain_seq === null ? 0 : Number(r.chain_seq), chain: r.hmac_chain ?? "" });
    for (const row of rows) {
      const h = head.get(row.input.event.zone_id) ?? { seq: 0, chain: "" };
      h.seq += 1;
      h.chain = chainLink(this.auditKey, h.chain, row.contentSha);
      row.chainSeq = h.seq;
      row.hmacChain = h.chain;
      head.set(row.input.event.zone_id, h);
    }
  }

  /**
   * Producer-chain checks at ingest: a fork (same producer, zone and seq as another event) and a broken
   * link (`prev` differs from the `sig` of the producer's previous event in the zone, or a first event
   * with a non-empty `prev`). Checked against stored rows and within the batch, in both directions (a late
   * event is also checked against its stored successor).
   */
  private async checkProducerChains(client: pg.PoolClient, rows: NewRow[], alerts: TamperAlert[]): Promise<void> {
    const chained = rows.filter((r) => r.input.event.chain !== undefined);
    if (chained.length === 0) return;
    const producers: string[] = [];
    const zones: string[] = [];
    const seqs: number[] = [];
    for (const r of chained) {
      const c = r.input.event.chain!;
      for (const s of [c.seq - 1, c.seq, c.seq + 1]) {
        producers.push(c.producer);
        zones.push(r.input.event.zone_id);
        seqs.push(s);
      }
    }
    const stored = await client.query<{ id: string; producer_id: string; zone_id: string; producer_seq: string; sig: string | null; producer_prev: string | null }>(
      `SELECT e.id, e.producer_id, e.zone_id, e.producer_seq, e.sig, e.producer_prev
         FROM audit_events e
         JOIN (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::bigint[])) AS q(producer_id, zone_id, producer_seq)
           ON e.producer_id = q.producer_id AND e.zone_id = q.zone_id AND e.producer_seq = q.producer_seq`,
      [producers, zones, seqs],
    );
    type Link = { id: string; sig: string | null; prev: string | null; row?: NewRow };
    const bySlot = new Map<string, Link[]>();
    const slot = (producer: string, zone: string, seq: number) => `${producer}\u0000${zone}\u0000${seq}`;
    const add = (k: string, l: Link) => {
      const list = bySlot.get(k);
      if (list) list.push(l);
      else bySlot.set(k, [l]);
    };
    for (const s of stored.rows) add(slot(s.producer_id, s.zone_id, Number(s.producer_seq)), { id: s.id, sig: s.sig, prev: s.producer_prev });
    for (const r of chained) {
      const c = r.input.event.chain!;
      add(slot(c.producer, r.input.event.zone_id, c.seq), { id: r.input.event.id, sig: r.input.sig ?? null, prev: c.prev, row: r });
    }
    const markStored = new Set<string>();
    const alerted = new Set<string>();
    const flag = (link: Link, zoneId: string, kind: TamperKind, detail: Record<string, unknown>) => {
      if (link.row) link.row.tamper = true;
      else markStored.add(link.id);
      const k = `${kind}\u0000${link.id}`;
      if (alerted.has(k)) return;
      alerted.add(k);
      alerts.push({ zoneId, eventId: link.id, kind, detail });
    };
    for (const r of chained) {
      const c = r.input.event.chain!;
      const zone = r.input.event.zone_id;
      const self = bySlot.get(slot(c.producer, zone, c.seq)) ?? [];
      if (self.length > 1) {
        const ids = self.map((l) => l.id);
        for (const l of self) flag(l, zone, "fork", { producer: c.producer, seq: c.seq, ids });
      }
      const me = self.find((l) => l.row === r)!;
      if (c.seq === 1) {
        if (c.prev !== "") flag(me, zone, "broken_link", { producer: c.producer, seq: c.seq, reason: "first event of a chain has a prev" });
      } else {
        for (const before of bySlot.get(slot(c.producer, zone, c.seq - 1)) ?? []) {
          if (before.sig !== null && before.sig !== c.prev) {
            flag(me, zone, "broken_link", { producer: c.producer, seq: c.seq, previous_id: before.id });
          }
        }
      }
      if (me.sig !== null) {
        for (const after of bySlot.get(slot(c.producer, zone, c.seq + 1)) ?? []) {
          if (after.row === undefined && after.prev !== me.sig) {
            flag(after, zone, "broken_link", { producer: c.producer, seq: c.seq + 1, previous_id: me.id });
          }
        }
      }
    }
    if (markStored.size > 0) {
      await client.query("UPDATE audit_events SET tamper_detected = true WHERE id = ANY($1::text[])", [[...markStored]]);
    }
  }

  private async insertRows(client: pg.PoolClient, rows: readonly NewRow[]): Promise<number> {
    const n = rows.length;
    const cols: unknown[][] = Array.from({ length: 22 }, () => new Array<unknown>(n));
    rows.forEach((r, i) => {
      const e = r.input.event;
      const c = e.chain;
      const values: unknown[] = [
        e.id,
        e.zone_id,
        e.event_type,
        actorIdOf(e),
        resourceIdOf(e),
        e.decision,
        e.evaluation_status,
        e.request_id,
        e.policy_set_id ?? null,
        e.policy_set_version_id ?? null,
        e.manifest_sha ?? null,
        r.input.data,
        r.hmacChain,
        r.tamper,
        e.occurred_at,
        r.chainSeq,
        r.contentSha,
        r.input.sig ?? null,
        c?.producer ?? null,
        c?.seq ?? null,
        c?.prev ?? null,
        r.input.streamEntryId ?? null,
      ];
      values.forEach((v, j) => ((cols[j] as unknown[])[i] = v));
    });
    const result = await client.query(INSERT_SQL, cols);
    return result.rowCount ?? 0;
  }
}

function replayError(id: string): RejectedMessageError {
  return new RejectedMessageError("tamper_on_replay", `event ${id} was already stored with different content`);
}

function replayAlert(p: Prepared, storedSha: string): TamperAlert {
  return {
    zoneId: p.input.event.zone_id,
    eventId: p.input.event.id,
    kind: "tamper_on_replay",
    detail: { stored_content_sha256: storedSha, received_content_sha256: p.contentSha, stream_entry_id: p.input.streamEntryId ?? null },
  };
}
