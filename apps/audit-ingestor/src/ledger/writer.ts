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
import { RejectedMessageError } from "@caracal/streams-core";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";

import { chainLink } from "./content.js";
import type { LedgerInput, PreparedEvent } from "./prepare.js";
import { COPY_SQL, prepareLedgerInput } from "./prepare.js";

export type { LedgerInput, PreparedEvent } from "./prepare.js";
export { actorIdOf, prepareLedgerInput, resourceIdOf, zoneLockKey } from "./prepare.js";

type Prepared = PreparedEvent;

const { escapeLiteral } = pg;

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
  /**
   * Start the next transaction while the previous one commits (default true; give the pool two
   * connections). Its BEGIN, zone locks and reads go out at once: PostgreSQL grants the locks when the
   * commit ends and runs the reads then, so the round trips and the commit's WAL flush overlap instead
   * of adding up. A transaction starts only once the one before it has reached COMMIT, so it merges every
   * batch that arrived during that one's COPY. With false (or a one-connection pool), one at a time.
   */
  overlapCommits?: boolean;
}

/** Class id of the zone locks in PostgreSQL's two-int advisory lock space ("AUDT"). */
export const ZONE_LOCK_CLASS = 0x41554454;

const ALERT_SQL = `
INSERT INTO audit_tamper_alerts (zone_id, event_id, kind, detail)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])`;

/** Raised (and retried) when the COPY met a row that the duplicate check did not see. */
class ConcurrentInsertError extends Error {}

/** Raised (and retried with the id lookup) when a batch written without it meets a stored id. */
class StoredIdError extends Error {
  constructor() {
    super("an event of the batch is already stored: retrying with the id lookup");
  }
}

interface NewRow {
  readonly prepared: Prepared;
  readonly contentSha: string;
  tamper: boolean;
  chainSeq: number;
  hmacChain: string;
}

export class LedgerWriter {
  private readonly pool: pg.Pool;
  private readonly auditKey: Buffer | undefined;
  private readonly maxConflictRetries: number;
  private readonly maxGroupRows: number;
  private readonly queue: Array<{ prepared: readonly Prepared[]; resolve: (r: KeyedResult) => void; reject: (e: unknown) => void }> = [];
  private readonly overlapCommits: boolean;
  /** A transaction of this writer is before its COMMIT (the next one waits for that). */
  private writing = false;
  /** What kind of audit_events this writer writes to (see LedgerShape). Read once, at the first write. */
  private shape: Promise<LedgerShape> | undefined;

  constructor(options: LedgerWriterOptions) {
    this.pool = options.pool;
    this.auditKey = options.auditKey;
    this.maxConflictRetries = options.maxConflictRetries ?? 5;
    this.maxGroupRows = options.maxGroupRows ?? 2000;
    this.overlapCommits = options.overlapCommits ?? true;
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
        prepared.push(prepareLedgerInput(input));
      } catch (error) {
        rejected.set(input.key, error instanceof RejectedMessageError ? error : new RejectedMessageError("parse_error", String(error)));
      }
    }
    const result = await this.writePrepared(prepared);
    for (const [k, r] of result.rejected) rejected.set(k, r);
    return { ...result, rejected };
  }

  /** `writeBatch` for events already prepared (by `prepareLedgerInput`, possibly in a verify worker). */
  async writePrepared(prepared: readonly PreparedEvent[]): Promise<BatchResult> {
    const rejected = new Map<string, RejectedMessageError>();
    if (prepared.length === 0) return { inserted: 0, duplicates: 0, rejected, alerts: [] };
    const keyed = await new Promise<KeyedResult>((resolve, reject) => {
      this.queue.push({ prepared, resolve, reject });
      this.drain();
    });
    const keys = new Set(prepared.map((p) => p.key));
    let inserted = 0;
    let duplicates = 0;
    for (const k of keys) {
      if (keyed.inserted.has(k)) inserted++;
      else if (keyed.duplicates.has(k)) duplicates++;
      const r = keyed.rejected.get(k);
      if (r !== undefined) rejected.set(k, r);
    }
    const ids = new Set(prepared.map((p) => p.event.id));
    return { inserted, duplicates, rejected, alerts: keyed.alerts.filter((a) => ids.has(a.eventId)) };
  }

  /** Starts the next group's transaction unless one is still before its COMMIT. */
  private drain(): void {
    if (this.writing || this.queue.length === 0) return;
    this.writing = true;
    const group = [this.queue.shift()!];
    let rows = group[0]!.prepared.length;
    while (this.queue.length > 0 && rows + this.queue[0]!.prepared.length <= this.maxGroupRows) {
      const next = this.queue.shift()!;
      rows += next.prepared.length;
      group.push(next);
    }
    let released = false;
    // called when this group's transaction (or its last retry) sends COMMIT or ends
    const release = () => {
      if (released) return;
      released = true;
      this.writing = false;
      this.drain();
    };
    void this.writeGroup(group, this.overlapCommits ? release : () => undefined).finally(release);
  }

  private async writeGroup(group: ReadonlyArray<{ prepared: readonly Prepared[]; resolve: (r: KeyedResult) => void; reject: (e: unknown) => void }>, committing: () => void): Promise<void> {
    try {
      const result = await this.writeRetrying(group.flatMap((g) => g.prepared), committing);
      for (const g of group) g.resolve(result);
    } catch (error) {
      if (group.length === 1) {
        group[0]!.reject(error);
        return;
      }
      for (const g of group) {
        try {
          g.resolve(await this.writeRetrying(g.prepared, committing));
        } catch (e) {
          g.reject(e);
        }
      }
    }
  }

  /**
   * Writes with retries. The first attempt skips the id lookup unless an input is marked `redelivered`:
   * a duplicate then meets the primary key in the COPY, which rolls the transaction back, and the next
   * attempt looks the ids up. New events, the steady state, cost PostgreSQL no lookup by id.
   */
  private async writeRetrying(prepared: readonly Prepared[], committing: () => void): Promise<KeyedResult> {
    this.shape ??= ledgerShape(this.pool);
    const shape = await this.shape.catch((error: unknown) => {
      this.shape = undefined;
      throw error;
    });
    let lookUpIds = shape.partitioned || prepared.some((p) => p.redelivered);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.writeOnce(prepared, lookUpIds, shape.rowSecurity, committing);
      } catch (error) {
        if (error instanceof StoredIdError) {
          lookUpIds = true;
          continue;
        }
        if (!(error instanceof ConcurrentInsertError) || attempt >= this.maxConflictRetries) throw error;
      }
    }
  }

  /**
   * One transaction: BEGIN and the zone locks; the reads that must see every commit of the previous lock
   * holder (READ COMMITTED: each statement takes its snapshot after the locks); COPY of the new
   * rows, tamper marks, alerts, COMMIT. There is no ON CONFLICT: with `lookUpIds` duplicates are found
   * under the locks; without it a stored id fails the COPY (unique violation), the transaction rolls back
   * and is retried with the lookup. A unique violation despite the lookup (a concurrent insert of the
   * same id into another zone, which holds a different lock) is retried the same way.
   */
  private async writeOnce(prepared: readonly Prepared[], lookUpIds: boolean, staged: boolean, committing: () => void): Promise<KeyedResult> {
    const rejected = new Map<string, RejectedMessageError>();
    const duplicates = new Set<string>();
    const alerts: TamperAlert[] = [];

    // Within the batch: the first occurrence of an id wins; a repeat with equal content is a no-op.
    const firstById = new Map<string, Prepared>();
    const unique: Prepared[] = [];
    for (const p of prepared) {
      const first = firstById.get(p.event.id);
      if (first === undefined) {
        firstById.set(p.event.id, p);
        unique.push(p);
      } else if (first.contentSha === p.contentSha) {
        duplicates.add(p.key);
      } else {
        alerts.push(replayAlert(p, first.contentSha));
        rejected.set(p.key, replayError(p.event.id));
      }
    }

    const client = await this.pool.connect();
    let broken = false;
    try {
      await prepareStatements(client).catch((error: unknown) => {
        // its prepared statements are unknown now: the connection is not reused
        broken = true;
        throw error;
      });
      const lockKeys = [...new Set(unique.map((p) => p.lockKey))].sort((a, b) => a - b);
      const zones = [...new Set(unique.map((p) => p.event.zone_id))];
      const ranges = producerRanges(unique);
      // One round trip (simple query protocol, several statements): BEGIN, every zone lock in ascending key
      // order (unnest keeps array order), then the reads, which run after the locks are granted, so each
      // one's snapshot includes every commit of the previous lock holder (READ COMMITTED). Values are
      // inlined: integers computed here, strings through escapeLiteral.
      // The three fixed statements are prepared once per connection and run with their generic plan:
      // planning them each time cost PostgreSQL more than running them (the neighbour read most of all).
      // A generic plan is kept for the connection's life, so it must not depend on the
      // table's size when it was made: on a nearly empty table the planner prefers a sequential scan and a
      // hash join for the neighbour read, which a big table then pays on every batch. With sequential
      // scans off the plans are the index scans these reads are designed for, at any size. Both settings
      // are SET LOCAL: this transaction only.
      const statements = [
        "BEGIN",
        "SET LOCAL plan_cache_mode = force_generic_plan",
        "SET LOCAL enable_seqscan = off",
        `EXECUTE audit_zone_locks(${intArray(lockKeys)}::int[])`,
        `EXECUTE audit_zone_heads(${textArray(zones)})`,
      ];
      if (ranges.producers.length > 0) {
        statements.push(`EXECUTE audit_producer_links(${textArray(ranges.producers)}, ${textArray(ranges.zones)}, ${intArray(ranges.from)}::bigint[], ${intArray(ranges.to)}::bigint[])`);
      }
      // the id lookup (redeliveries only) is planned per batch: its plan depends on how many ids it holds
      // (a row stored before an upstream database was adopted has no hmac_chain: upstream ingested it, and its
      // content hash is upstream's, so a redelivery of it is a duplicate whatever its hash)
      if (lookUpIds) statements.push(`SELECT id, CASE WHEN hmac_chain IS NULL THEN NULL ELSE content_sha256 END AS content_sha256 FROM audit_events WHERE id = ANY(${textArray(unique.map((p) => p.event.id))})`);
      const results = (await client.query(statements.join(";\n"))) as unknown as pg.QueryResult[];
      const headRows = results[4] as pg.QueryResult<{ zone_id: string; chain_seq: string | null; hmac_chain: string | null }>;
      const storedRows = ranges.producers.length > 0 ? (results[5] as pg.QueryResult<StoredLink>) : undefined;
      const existingRows = lookUpIds ? (results[results.length - 1] as pg.QueryResult<{ id: string; content_sha256: string | null }>) : undefined;
      // A stored neighbour with the id of a new row is that row, stored before: look the ids up instead.
      if (!lookUpIds && storedRows !== undefined && storedRows.rows.some((r) => firstById.has(r.id))) throw new StoredIdError();

      const storedSha = new Map((existingRows?.rows ?? []).map((r) => [r.id, r.content_sha256]));
      const fresh: NewRow[] = [];
      for (const p of unique) {
        const sha = storedSha.get(p.event.id);
        if (sha === undefined) fresh.push({ prepared: p, contentSha: p.contentSha, tamper: false, chainSeq: 0, hmacChain: "" });
        else if (sha === null || sha === p.contentSha) duplicates.add(p.key);
        else {
          alerts.push(replayAlert(p, sha));
          rejected.set(p.key, replayError(p.event.id));
        }
      }

      const markStored = fresh.length > 0 ? this.checkProducerChains(fresh, storedRows?.rows ?? [], alerts) : [];
      try {
        // chain links are hashed while the COPY streams, so PostgreSQL inserts the first rows meanwhile
        if (fresh.length > 0) await copyRows(client, fresh, this.chainAssigner(headRows.rows), staged);
        if (markStored.length > 0) await client.query("UPDATE audit_events SET tamper_detected = true WHERE id = ANY($1::text[])", [markStored]);
        if (alerts.length > 0) {
          await client.query(ALERT_SQL, [alerts.map((a) => a.zoneId), alerts.map((a) => a.eventId), alerts.map((a) => a.kind), alerts.map((a) => JSON.stringify(a.detail))]);
        }
        const committed = client.query("COMMIT");
        committing();
        await committed;
      } catch (error) {
        if ((error as { code?: string }).code === "23505") {
          if (!lookUpIds) throw new StoredIdError();
          throw new ConcurrentInsertError("a concurrent insert of the same id: retrying", { cause: error });
        }
        throw error;
      }
      return { inserted: new Set(fresh.map((r) => r.prepared.key)), duplicates, rejected, alerts };
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

  /**
   * Assigns `chain_seq` / `hmac_chain` to rows handed in batch order, from each zone's head (read under
   * its lock).
   */
  private chainAssigner(heads: ReadonlyArray<{ zone_id: string; chain_seq: string | null; hmac_chain: string | null }>): (row: NewRow) => void {
    const head = new Map<string, { seq: number; chain: string }>();
    for (const r of heads) head.set(r.zone_id, { seq: r.chain_seq === null ? 0 : Number(r.chain_seq), chain: r.hmac_chain ?? "" });
    return (row) => {
      const zone = row.prepared.event.zone_id;
      let h = head.get(zone);
      if (h === undefined) head.set(zone, (h = { seq: 0, chain: "" }));
      h.seq += 1;
      h.chain = chainLink(this.auditKey, h.chain, row.contentSha);
      row.chainSeq = h.seq;
      row.hmacChain = h.chain;
    };
  }

  /**
   * Producer-chain checks at ingest: a fork (same producer, zone and seq as another event) and a broken
   * link (`prev` differs from the `sig` of the producer's previous event in the zone, or a first event
   * with a non-empty `prev`). Checked against stored rows and within the batch, in both directions (a late
   * event is also checked against its stored successor). Returns the ids of stored rows to mark.
   */
  private checkProducerChains(rows: NewRow[], storedRows: readonly StoredLink[], alerts: TamperAlert[]): string[] {
    const chained = rows.filter((r) => r.prepared.event.chain !== undefined);
    if (chained.length === 0) return [];
    type Link = { id: string; sig: string | null; prev: string | null; row?: NewRow };
    // links by producer chain (producer and zone), then by seq: one key string per row, not one per lookup
    const byChain = new Map<string, Map<number, Link[]>>();
    const chainOf = (producer: string, zone: string) => `${producer}\u0000${zone}`;
    const add = (chain: string, seq: number, l: Link) => {
      let bySeq = byChain.get(chain);
      if (bySeq === undefined) byChain.set(chain, (bySeq = new Map()));
      const list = bySeq.get(seq);
      if (list) list.push(l);
      else bySeq.set(seq, [l]);
    };
    const freshIds = new Set(rows.map((r) => r.prepared.event.id));
    for (const s of storedRows) {
      if (!freshIds.has(s.id)) add(chainOf(s.producer_id, s.zone_id), Number(s.producer_seq), { id: s.id, sig: s.sig, prev: s.producer_prev });
    }
    const chainKeys: string[] = new Array(chained.length);
    chained.forEach((r, i) => {
      const c = r.prepared.event.chain!;
      const key = chainOf(c.producer, r.prepared.event.zone_id);
      chainKeys[i] = key;
      add(key, c.seq, { id: r.prepared.event.id, sig: r.prepared.sig ?? null, prev: c.prev, row: r });
    });
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
    chained.forEach((r, i) => {
      const c = r.prepared.event.chain!;
      const zone = r.prepared.event.zone_id;
      const bySeq = byChain.get(chainKeys[i]!)!;
      const self = bySeq.get(c.seq) ?? [];
      if (self.length > 1) {
        const ids = self.map((l) => l.id);
        for (const l of self) flag(l, zone, "fork", { producer: c.producer, seq: c.seq, ids });
      }
      const me = self.find((l) => l.row === r)!;
      if (c.seq === 1) {
        if (c.prev !== "") flag(me, zone, "broken_link", { producer: c.producer, seq: c.seq, reason: "first event of a chain has a prev" });
      } else {
        for (const before of bySeq.get(c.seq - 1) ?? []) {
          if (before.sig !== null && before.sig !== c.prev) {
            flag(me, zone, "broken_link", { producer: c.producer, seq: c.seq, previous_id: before.id });
          }
        }
      }
      if (me.sig !== null) {
        for (const after of bySeq.get(c.seq + 1) ?? []) {
          if (after.row === undefined && after.prev !== me.sig) {
            flag(after, zone, "broken_link", { producer: c.producer, seq: c.seq + 1, previous_id: me.id });
          }
        }
      }
    });
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

/**
 * The statements of every transaction's first round trip, prepared once per connection (see writeOnce):
 * the zone locks in array order; each zone's head, its row with the highest chain_seq (an index scan
 * backward per zone); the stored neighbours (seq - 1, seq, seq + 1) of every chained event of the batch,
 * one index range scan per run of a producer's seqs in a zone (see `producerRanges`), not three lookups
 * per event.
 */
const PREPARE_SQL = [
  `PREPARE audit_zone_locks(int[]) AS SELECT pg_advisory_xact_lock(${ZONE_LOCK_CLASS}, k) FROM unnest($1) AS k`,
  `PREPARE audit_zone_heads(text[]) AS SELECT z.zone_id, h.chain_seq, h.hmac_chain
  FROM unnest($1) AS z(zone_id)
  LEFT JOIN LATERAL (
    SELECT chain_seq, hmac_chain FROM audit_events e WHERE e.zone_id = z.zone_id AND e.chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1
  ) h ON true`,
  `PREPARE audit_producer_links(text[], text[], bigint[], bigint[]) AS SELECT e.id, e.producer_id, e.zone_id, e.producer_seq, e.sig, e.producer_prev
  FROM unnest($1, $2, $3, $4) AS q(producer_id, zone_id, seq_from, seq_to)
  JOIN LATERAL (
    SELECT id, producer_id, zone_id, producer_seq, sig, producer_prev FROM audit_events x
     WHERE x.producer_id = q.producer_id AND x.zone_id = q.zone_id AND x.producer_seq BETWEEN q.seq_from AND q.seq_to
  ) e ON true`,
].join(";\n");

/**
 * The kind of audit_events a writer writes to.
 * - `partitioned`: an adopted upstream table, partitioned on occurred_at. Its primary key is
 *   (id, occurred_at), so a stored id with another occurred_at does not fail the COPY: every batch looks
 *   its ids up.
 * - `rowSecurity`: upstream's row-level security applies to this connection's role (not the owner), and
 *   PostgreSQL refuses COPY into such a table: rows are copied into a temporary staging table and moved
 *   with one INSERT ... SELECT (the policy's WITH CHECK passes: the pool sets caracal.zone_id = '*').
 */
export interface LedgerShape {
  partitioned: boolean;
  rowSecurity: boolean;
}

export async function ledgerShape(pool: pg.Pool): Promise<LedgerShape> {
  const { rows } = await pool.query<{ relkind: string; rls: boolean }>(
    "SELECT relkind, row_security_active(oid) AS rls FROM pg_class WHERE oid = to_regclass('audit_events')",
  );
  return { partitioned: rows[0]?.relkind === "p", rowSecurity: rows[0]?.rls === true };
}

/** Whether audit_events is partitioned (an adopted upstream table; see LedgerShape). */
export async function isPartitionedLedger(pool: pg.Pool): Promise<boolean> {
  return (await ledgerShape(pool)).partitioned;
}

const STAGING_TABLE_SQL = "CREATE TEMP TABLE IF NOT EXISTS audit_events_staging (LIKE audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";
const STAGED_COPY_SQL = COPY_SQL.replace("COPY audit_events (", "COPY audit_events_staging (");
const STAGED_COLUMNS = /\(([^)]*)\)/.exec(COPY_SQL)?.[1] ?? "";
const STAGED_INSERT_SQL = `INSERT INTO audit_events (${STAGED_COLUMNS}) SELECT ${STAGED_COLUMNS} FROM audit_events_staging`;

/** Connections that have PREPARE_SQL (shared by every writer: several may use one pool). */
const preparedConnections = new WeakSet<pg.ClientBase>();

async function prepareStatements(client: pg.PoolClient): Promise<void> {
  if (preparedConnections.has(client)) return;
  await client.query(PREPARE_SQL);
  preparedConnections.add(client);
}

function textArray(values: readonly string[]): string {
  return `ARRAY[${values.map((v) => escapeLiteral(v)).join(",")}]::text[]`;
}

function intArray(values: readonly number[]): string {
  for (const v of values) if (!Number.isSafeInteger(v)) throw new Error(`not an integer: ${v}`);
  return `ARRAY[${values.join(",")}]`;
}

interface ProducerRanges {
  producers: string[];
  zones: string[];
  from: number[];
  to: number[];
}

/**
 * The seq ranges `audit_producer_links` reads: per producer and zone, the batch's seqs are cut into runs whose
 * consecutive seqs differ by at most 2, and each run [first, last] becomes [first - 1, last + 1]. Every seq
 * in such a range is within 1 of a batch seq, so the ranges return exactly the neighbours the chain checks
 * need; a contiguous batch of a producer costs one range.
 */
function producerRanges(unique: readonly Prepared[]): ProducerRanges {
  const seqsBySlot = new Map<string, { producer: string; zone: string; seqs: number[] }>();
  for (const p of unique) {
    const c = p.event.chain;
    if (c === undefined) continue;
    const slot = `${c.producer}\u0000${p.event.zone_id}`;
    const entry = seqsBySlot.get(slot);
    if (entry === undefined) seqsBySlot.set(slot, { producer: c.producer, zone: p.event.zone_id, seqs: [c.seq] });
    else entry.seqs.push(c.seq);
  }
  const out: ProducerRanges = { producers: [], zones: [], from: [], to: [] };
  for (const { producer, zone, seqs } of seqsBySlot.values()) {
    seqs.sort((a, b) => a - b);
    let first = seqs[0] as number;
    let last = first;
    const push = () => {
      out.producers.push(producer);
      out.zones.push(zone);
      out.from.push(first - 1);
      out.to.push(last + 1);
    };
    for (let i = 1; i < seqs.length; i++) {
      const seq = seqs[i] as number;
      if (seq - last > 2) {
        push();
        first = seq;
      }
      last = seq;
    }
    push();
  }
  return out;
}

/** Rows of COPY text per write to the socket: PostgreSQL starts on a chunk while the next one is built. */
const COPY_CHUNK_ROWS = 128;

/**
 * COPYs `rows`, calling `assign` on each (in order) just before its line is built. Each chunk is one
 * buffer: prefixes that arrive encoded (from a verify worker) are copied in as bytes, never decoded or
 * encoded again on this thread.
 */
async function copyRows(client: pg.PoolClient, rows: readonly NewRow[], assign: (row: NewRow) => void, staged: boolean): Promise<void> {
  // (every time: a table created in a transaction that then rolled back is gone again)
  if (staged) await client.query(STAGING_TABLE_SQL);
  const stream = client.query(copyFrom(staged ? STAGED_COPY_SQL : COPY_SQL));
  const finished = new Promise<void>((resolve, reject) => {
    stream.on("error", reject);
    stream.on("finish", () => resolve());
  });
  const pieces: Uint8Array[] = [];
  const suffixes: string[] = [];
  let bytes = 0;
  const flush = (): Buffer => {
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    for (let i = 0; i < pieces.length; i++) {
      const prefix = pieces[i] as Uint8Array;
      out.set(prefix, at);
      at += prefix.length;
      at += out.write(suffixes[i] as string, at, "latin1");
    }
    pieces.length = 0;
    suffixes.length = 0;
    bytes = 0;
    return out;
  };
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i] as NewRow;
    assign(r);
    const prefix = r.prepared.copyPrefix;
    const encoded = typeof prefix === "string" ? Buffer.from(prefix, "utf8") : prefix;
    // hmac_chain is hex and chain_seq an integer: neither needs escaping, and the suffix is ASCII
    const suffix = `${r.hmacChain}\t${r.tamper ? "t" : "f"}\t${r.chainSeq}\n`;
    pieces.push(encoded);
    suffixes.push(suffix);
    bytes += encoded.length + suffix.length;
    if ((i + 1) % COPY_CHUNK_ROWS === 0) stream.write(flush());
  }
  stream.end(flush());
  try {
    await finished;
  } catch (error) {
    // PostgreSQL names the line it refused ("COPY audit_events, line N, column ..."): the row's key rides
    // on the error, so the caller can set that row aside instead of searching the batch for it.
    const line = /COPY audit_events(?:_staging)?, line (\d+)/.exec(String((error as { where?: unknown }).where ?? ""))?.[1];
    const row = line === undefined ? undefined : rows[Number(line) - 1];
    if (row !== undefined && typeof error === "object" && error !== null) Object.assign(error, { refusedRowKey: row.prepared.key });
    throw error;
  }
  if (staged) await client.query(STAGED_INSERT_SQL);
}

function replayError(id: string): RejectedMessageError {
  return new RejectedMessageError("tamper_on_replay", `event ${id} was already stored with different content`);
}

function replayAlert(p: Prepared, storedSha: string): TamperAlert {
  return {
    zoneId: p.event.zone_id,
    eventId: p.event.id,
    kind: "tamper_on_replay",
    detail: { stored_content_sha256: storedSha, received_content_sha256: p.contentSha, stream_entry_id: p.streamEntryId ?? null },
  };
}
