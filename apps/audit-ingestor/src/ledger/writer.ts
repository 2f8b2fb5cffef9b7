/**
 * The ledger writer (WIRE §7): one transaction per batch (batches waiting are merged: group commit), a
 * per-zone advisory lock inside it, the new rows written with one COPY FROM STDIN, idempotent on `id`.
 *
 * Invariants:
 * - `chain_seq` is 1, 2, 3, ... per zone with no gap: duplicates are found (under the zone lock) before any
 *   seq is assigned, and if the COPY still meets a stored id (a concurrent insert of the same id into
 *   another zone, which holds a different lock) the unique violation rolls the transaction back and it is
 *   retried.
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
import { from as copyFrom } from "pg-copy-streams";

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
  /** Upper bound of rows merged into one transaction by group commit. Default 2000. */
  maxGroupRows?: number;
}

/** Class id of the zone locks in PostgreSQL's two-int advisory lock space ("AUDT"). */
export const ZONE_LOCK_CLASS = 0x41554454;

/** The int4 advisory lock key of a zone: the first 4 bytes of SHA-256(zone_id), signed. */
export function zoneLockKey(zoneId: string): number {
  return createHash("sha256").update(zoneId, "utf8").digest().readInt32BE(0);
}

const ALERT_SQL = `
INSERT INTO audit_tamper_alerts (zone_id, event_id, kind, detail)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])`;

/** Raised (and retried) when the COPY met a row that the duplicate check did not see. */
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
  private readonly maxGroupRows: number;
  private readonly queue: Array<{ prepared: Prepared[]; resolve: (r: KeyedResult) => void; reject: (e: unknown) => void }> = [];
  private draining = false;

  constructor(options: LedgerWriterOptions) {
    this.pool = options.pool;
    this.auditKey = options.auditKey;
    this.maxConflictRetries = options.maxConflictRetries ?? 5;
    this.maxGroupRows = options.maxGroupRows ?? 2000;
  }

  /**
   * Stores a batch. Throws on a database failure (nothing of the batch is stored then: the caller leaves
   * the entries pending). Entries whose data has no canonical form, and replays with other content, are
   * returned in `rejected`.
   *
   * Group commit: batches handed in while a transaction runs are merged into the next one (up to
   * `maxGroupRows` rows), so several batches read in parallel cost one lock round and one commit. If a
   * merged transaction fails, each batch is retried alone, so one batch cannot fail another.
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
    const keyed = await new Promise<KeyedResult>((resolve, reject) => {
      this.queue.push({ prepared, resolve, reject });
      void this.drain();
    });
    const keys = new Set(prepared.map((p) => p.input.key));
    let inserted = 0;
    let duplicates = 0;
    for (const k of keys) {
      if (keyed.inserted.has(k)) inserted++;
      else if (keyed.duplicates.has(k)) duplicates++;
      const r = keyed.rejected.get(k);
      if (r !== undefined) rejected.set(k, r);
    }
    const ids = new Set(prepared.map((p) => p.input.event.id));
    return { inserted, duplicates, rejected, alerts: keyed.alerts.filter((a) => ids.has(a.eventId)) };
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const group = [this.queue.shift()!];
        let rows = group[0]!.prepared.length;
        while (this.queue.length > 0 && rows + this.queue[0]!.prepared.length <= this.maxGroupRows) {
          const next = this.queue.shift()!;
          rows += next.prepared.length;
          group.push(next);
        }
        try {
          const result = await this.writeRetrying(group.flatMap((g) => g.prepared));
          for (const g of group) g.resolve(result);
        } catch (error) {
          if (group.length === 1) {
            group[0]!.reject(error);
            continue;
          }
          for (const g of group) {
            try {
              g.resolve(await this.writeRetrying(g.prepared));
            } catch (e) {
              g.reject(e);
            }
          }
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async writeRetrying(prepared: readonly Prepared[]): Promise<KeyedResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.writeOnce(prepared);
      } catch (error) {
        if (!(error instanceof ConcurrentInsertError) || attempt >= this.maxConflictRetries) throw error;
      }
    }
  }

  /**
   * One transaction: BEGIN and the zone locks; the reads that must see every commit of the previous lock
   * holder (READ COMMITTED: each statement takes its snapshot after the locks); COPY of the new
   * rows, tamper marks, alerts, COMMIT. There is no ON CONFLICT: duplicates were found under the locks, and
   * a unique violation (a concurrent insert of the same id into another zone) rolls the transaction back
   * and retries it.
   */
  private async writeOnce(prepared: readonly Prepared[]): Promise<KeyedResult> {
    const rejected = new Map<string, RejectedMessageError>();
    const duplicates = new Set<string>();
    const alerts: TamperAlert[] = [];

    // Within the batch: the first occurrence of an id wins; a repeat with equal content is a no-op.
    const firstById = new Map<string, Prepared>();
    const unique: Prepared[] = [];
    for (const p of prepared) {
      const first = firstById.get(p.input.event.id);
      if (first === undefined) {
        firstById.set(p.input.event.id, p);
        unique.push(p);
      } else if (first.contentSha === p.contentSha) {
        duplicates.add(p.input.key);
      } else {
        alerts.push(replayAlert(p, first.contentSha));
        rejected.set(p.input.key, replayError(p.input.event.id));
      }
    }

    const client = await this.pool.connect();
    let broken = false;
    try {
      const lockKeys = [...new Set(unique.map((p) => zoneLockKey(p.input.event.zone_id)))].sort((a, b) => a - b);
      const zones = [...new Set(unique.map((p) => p.input.event.zone_id))];
      const slots = producerSlots(unique);
      // BEGIN and every zone lock in one simple query, in ascending key order (unnest keeps array order).
      // Keys are integers computed here, so inlining them is safe.
      await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${ZONE_LOCK_CLASS}, k) FROM unnest(ARRAY[${lockKeys.join(",")}]::int[]) AS k`);
      // Under the locks: each statement's snapshot now includes every commit of the previous lock holder.
      const existingRows = await client.query<{ id: string; content_sha256: string }>("SELECT id, content_sha256 FROM audit_events WHERE id = ANY($1::text[])", [
        unique.map((p) => p.input.event.id),
      ]);
      const headRows = await client.query<{ zone_id: string; chain_seq: string | null; hmac_chain: string | null }>(HEADS_SQL, [zones]);
      const storedRows = slots.producers.length > 0 ? await client.query<StoredLink>(PRODUCER_SQL, [slots.producers, slots.zones, slots.seqs]) : undefined;

      const storedSha = new Map(existingRows.rows.map((r) => [r.id, r.content_sha256]));
      const fresh: NewRow[] = [];
      for (const p of unique) {
        const sha = storedSha.get(p.input.event.id);
        if (sha === undefined) fresh.push({ input: p.input, contentSha: p.contentSha, tamper: false, chainSeq: 0, hmacChain: "" });
        else if (sha === p.contentSha) duplicates.add(p.input.key);
        else {
          alerts.push(replayAlert(p, sha));
          rejected.set(p.input.key, replayError(p.input.event.id));
        }
      }

      const markStored = fresh.length > 0 ? this.checkProducerChains(fresh, storedRows?.rows ?? [], alerts) : [];
      this.assignChain(headRows.rows, fresh);
      try {
        if (fresh.length > 0) {
          await copyRows(client, fresh);
        }
        if (markStored.length > 0) await client.query("UPDATE audit_events SET tamper_detected = true WHERE id = ANY($1::text[])", [markStored]);
        if (alerts.length > 0) {
          await client.query(ALERT_SQL, [alerts.map((a) => a.zoneId), alerts.map((a) => a.eventId), alerts.map((a) => a.kind), alerts.map((a) => JSON.stringify(a.detail))]);
        }
        await client.query("COMMIT");
      } catch (error) {
        if ((error as { code?: string }).code === "23505") throw new ConcurrentInsertError("a concurrent insert of the same id: retrying", { cause: error });
        throw error;
      }
      return { inserted: new Set(fresh.map((r) => r.input.key)), duplicates, rejected, alerts };
    } catch (error) {
      try {
        await client.query("ROLLBACK");
      } catch {
        broken = true;
      }
      throw error;
    } finally {
      // a connection whose state is unknown is discarded rather than returned to the pool
      client.release(broken ? true : undefined);
    }
  }

  /** Assigns `chain_seq` / `hmac_chain` in batch order from each zone's head (read under its lock). */
  private assignChain(heads: ReadonlyArray<{ zone_id: string; chain_seq: string | null; hmac_chain: string | null }>, rows: NewRow[]): void {
    const head = new Map<string, { seq: number; chain: string }>();
    for (const r of heads) head.set(r.zone_id, { seq: r.chain_seq === null ? 0 : Number(r.chain_seq), chain: r.hmac_chain ?? "" });
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
   * event is also checked against its stored successor). Returns the ids of stored rows to mark.
   */
  private checkProducerChains(rows: NewRow[], storedRows: readonly StoredLink[], alerts: TamperAlert[]): string[] {
    const chained = rows.filter((r) => r.input.event.chain !== undefined);
    if (chained.length === 0) return [];
    type Link = { id: string; sig: string | null; prev: string | null; row?: NewRow };
    const bySlot = new Map<string, Link[]>();
    const slot = (producer: string, zone: string, seq: number) => `${producer}\u0000${zone}\u0000${seq}`;
    const add = (k: string, l: Link) => {
      const list = bySlot.get(k);
      if (list) list.push(l);
      else bySlot.set(k, [l]);
    };
    const freshIds = new Set(rows.map((r) => r.input.event.id));
    for (const s of storedRows) {
      if (!freshIds.has(s.id)) add(slot(s.producer_id, s.zone_id, Number(s.producer_seq)), { id: s.id, sig: s.sig, prev: s.producer_prev });
    }
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
    return [...markStored];
  }
}

interface KeyedResult {
  readonly inserted: ReadonlySet<string>;
  readonly duplicates: ReadonlySet<string>;
  readonly rejected: ReadonlyMap<string, RejectedMessageError>;
  readonly alerts: readonly TamperAlert[];
}

interface StoredLink {
  id: string;
  producer_id: string;
  zone_id: string;
  producer_seq: string;
  sig: string | null;
  producer_prev: string | null;
}

const HEADS_SQL = `
SELECT z.zone_id, h.chain_seq, h.hmac_chain
  FROM unnest($1::text[]) AS z(zone_id)
  LEFT JOIN LATERAL (
    SELECT chain_seq, hmac_chain FROM audit_events e WHERE e.zone_id = z.zone_id ORDER BY chain_seq DESC LIMIT 1
  ) h ON true`;

/** Stored neighbours (seq - 1, seq, seq + 1) of every chained event of the batch, by index lookups. */
const PRODUCER_SQL = `
SELECT e.id, e.producer_id, e.zone_id, e.producer_seq, e.sig, e.producer_prev
  FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::bigint[])) AS q(producer_id, zone_id, producer_seq)
  JOIN LATERAL (
    SELECT id, producer_id, zone_id, producer_seq, sig, producer_prev FROM audit_events x
     WHERE x.producer_id = q.producer_id AND x.zone_id = q.zone_id AND x.producer_seq = q.producer_seq
  ) e ON true`;

function producerSlots(unique: readonly Prepared[]): { producers: string[]; zones: string[]; seqs: number[] } {
  const producers: string[] = [];
  const zones: string[] = [];
  const seqs: number[] = [];
  for (const p of unique) {
    const c = p.input.event.chain;
    if (c === undefined) continue;
    for (const s of [c.seq - 1, c.seq, c.seq + 1]) {
      producers.push(c.producer);
      zones.push(p.input.event.zone_id);
      seqs.push(s);
    }
  }
  return { producers, zones, seqs };
}

const COPY_SQL = `COPY audit_events (
  id, zone_id, event_type, actor_id, resource_id, decision, evaluation_status, request_id,
  policy_set_id, policy_set_version_id, manifest_sha, payload_json, determining_policies_json,
  diagnostics_json, metadata_json, hmac_chain, tamper_detected, occurred_at, chain_seq, content_sha256,
  sig, producer_id, producer_seq, producer_prev, stream_entry_id
) FROM STDIN`;

/** COPY text format: NULL is \\N; backslash, tab, newline and carriage return are escaped. */
function copyValue(v: unknown): string {
  if (v === null || v === undefined) return "\\N";
  const text = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : typeof v === "boolean" ? (v ? "t" : "f") : String(v);
  return /[\\\t\n\r]/.test(text) ? text.replace(/[\\\t\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r")) : text;
}

async function copyRows(client: pg.PoolClient, rows: readonly NewRow[]): Promise<void> {
  let text = "";
  for (const r of rows) {
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
      e.policy_set_id,
      e.policy_set_version_id,
      e.manifest_sha,
      r.input.data,
      e.determining_policies_json,
      e.diagnostics_json,
      e.metadata_json,
      r.hmacChain,
      r.tamper,
      e.occurred_at,
      r.chainSeq,
      r.contentSha,
      r.input.sig,
      c?.producer,
      c?.seq,
      c?.prev,
      r.input.streamEntryId,
    ];
    text += values.map(copyValue).join("\t") + "\n";
  }
  const stream = client.query(copyFrom(COPY_SQL));
  await new Promise<void>((resolve, reject) => {
    stream.on("error", reject);
    stream.on("finish", () => resolve());
    stream.end(Buffer.from(text, "utf8"));
  });
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
