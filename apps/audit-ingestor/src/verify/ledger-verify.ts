/**
 * Re-verification of a zone's ledger from its rows alone (WIRE §7): shared by the tamper sweeper and the
 * `verify` command (and later the operator CLI).
 *
 * What is found, per row in chain_seq order:
 * - `changed`: `payload_json` no longer hashes to `content_sha256`, or a column differs from the payload;
 * - `inserted`: a row whose content is consistent but whose `hmac_chain` is not the link the ingestor
 *   would have made (a row added by SQL, or a row changed together with its hash);
 * - `deleted`: `chain_seq` skips numbers (rows removed from the middle);
 * - `fork`, `broken_link`, `gap`: producer-chain breaks (WIRE §6); a gap is reported only once the row
 *   after it is older than the redelivery grace time.
 * Each link is checked against the stored previous row, so one changed row is one break, not a cascade.
 * The chain starts at the zone's retention anchor (`audit_chain_anchors`, written by retention with its
 * deletes) or, without one, at chain_seq 1: rows removed from the start are found too. Limit: rows removed
 * from the end of a zone leave no trace in the remaining rows.
 */
import type pg from "pg";

import { chainLink, contentSha256 } from "../ledger/content.js";

export type BreakKind = "changed" | "inserted" | "deleted" | "fork" | "broken_link" | "gap";

export interface LedgerBreak {
  readonly kind: BreakKind;
  readonly zoneId: string;
  /** The row that carries the break (for `deleted` and `gap`: the first row after the missing ones). */
  readonly eventId: string;
  readonly chainSeq: number;
  readonly detail: string;
}

export interface VerifyRange {
  /** First chain_seq to check (its link is checked against the row before it). Default: the zone's first row. */
  fromSeq?: number;
  /** Last chain_seq to check. Default: the zone's last row. */
  toSeq?: number;
}

export interface VerifyOptions {
  pool: pg.Pool;
  auditKey: Buffer | undefined;
  /** Producer-chain gaps whose next row was ingested less than this long ago are not reported. */
  gapGraceMs: number;
  /** Rows per page. Default 5,000. */
  pageSize?: number;
  now?: () => number;
}

export interface VerifyResult {
  readonly rowsChecked: number;
  readonly breaks: LedgerBreak[];
}

interface Row {
  id: string;
  zone_id: string;
  chain_seq: string;
  hmac_chain: string;
  content_sha256: string;
  payload_json: Record<string, unknown>;
  /** Names of the columns that differ from the payload (see DIFFERING). */
  differing: string[];
}

/**
 * Columns that differ from the payload they were derived from, computed by PostgreSQL itself so that the
 * comparison is exactly the ingest's derivation: a text column is the payload's value when it is a JSON
 * string, else NULL; a jsonb column is the payload's value (jsonb equality: key order and number spelling
 * aside), SQL NULL when absent; `occurred_at` is the payload's text parsed as PostgreSQL parsed it at
 * ingest (same rounding of sub-microsecond digits, same offsets). An unparseable text (a changed payload)
 * reads as NULL and so as differing.
 */
const DIFFERING = `array_remove(ARRAY[${[
  ...["id", "zone_id", "event_type", "decision", "evaluation_status", "request_id", "policy_set_id", "policy_set_version_id", "manifest_sha"].map(
    (c) => `CASE WHEN ${c} IS DISTINCT FROM (CASE WHEN jsonb_typeof(payload_json->'${c}') = 'string' THEN payload_json->>'${c}' END) THEN '${c}' END`,
  ),
  ...["determining_policies_json", "diagnostics_json", "metadata_json"].map((c) => `CASE WHEN ${c} IS DISTINCT FROM payload_json->'${c}' THEN '${c}' END`),
  `CASE WHEN occurred_at IS DISTINCT FROM caracal_try_timestamptz(payload_json->>'occurred_at') THEN 'occurred_at' END`,
].join(", ")}], NULL) AS differing`;

const ROW_COLUMNS = `id, zone_id, chain_seq, hmac_chain, content_sha256, payload_json, ${DIFFERING}`;

/** Verifies one zone's ledger chain (and its producer chains) over a chain_seq range. */
export async function verifyZone(zoneId: string, range: VerifyRange, options: VerifyOptions): Promise<VerifyResult> {
  const { pool, auditKey } = options;
  const pageSize = options.pageSize ?? 5000;
  const breaks: LedgerBreak[] = [];
  const fromSeq = range.fromSeq ?? 1;
  const toSeq = range.toSeq ?? Number.MAX_SAFE_INTEGER;

  // The anchor: the last row before the range (its stored hmac_chain is where the range's first link starts).
  let prevSeq: number | undefined;
  let prevChain = "";
  if (fromSeq > 1) {
    const before = await pool.query<{ chain_seq: string; hmac_chain: string }>(
      // (a row ingested by upstream before its database was adopted has no hmac_chain: this project's chain
      // starts after it, from the empty string, like after a retention anchor)
      "SELECT chain_seq, COALESCE(hmac_chain, '') AS hmac_chain FROM audit_events WHERE zone_id = $1 AND chain_seq < $2 ORDER BY chain_seq DESC LIMIT 1",
      [zoneId, fromSeq],
    );
    const b = before.rows[0];
    if (b !== undefined) {
      prevSeq = Number(b.chain_seq);
      prevChain = b.hmac_chain;
    }
  }
  // Where a zone's chain now starts (audit_chain_anchors): the last row retention deleted, or the last row
  // upstream ingested before its database was adopted. Rows at or below it are not checked: a range that
  // starts below it starts at it.
  const anchor = await pool.query<{ chain_seq: string; hmac_chain: string }>("SELECT chain_seq, hmac_chain FROM audit_chain_anchors WHERE zone_id = $1", [zoneId]);
  const a = anchor.rows[0];
  if (a !== undefined && Number(a.chain_seq) >= (prevSeq ?? fromSeq - 1)) {
    prevSeq = Number(a.chain_seq);
    prevChain = a.hmac_chain;
  } else if (prevSeq === undefined && fromSeq <= 1) {
    // no anchor: the chain must start at 1, so a first row with a higher seq means rows were removed
    prevSeq = 0;
  }

  let rowsChecked = 0;
  let cursor = prevSeq ?? fromSeq - 1;
  for (;;) {
    const page = await pool.query<Row>(
      `SELECT ${ROW_COLUMNS} FROM audit_events WHERE zone_id = $1 AND chain_seq > $2 AND chain_seq <= $3 ORDER BY chain_seq LIMIT $4`,
      [zoneId, cursor, toSeq, pageSize],
    );
    for (const row of page.rows) {
      const seq = Number(row.chain_seq);
      rowsChecked++;
      let sha: string | undefined;
      try {
        sha = contentSha256(row.payload_json);
      } catch {
        sha = undefined;
      }
      const differing = row.differing;
      const contentOk = sha === row.content_sha256 && differing.length === 0;
      if (!contentOk) {
        breaks.push({
          kind: "changed",
          zoneId,
          eventId: row.id,
          chainSeq: seq,
          detail: sha !== row.content_sha256 ? "payload_json does not hash to content_sha256" : `columns differ from payload_json: ${differing.join(", ")}`,
        });
      }
      const gap = prevSeq !== undefined && seq !== prevSeq + 1;
      if (gap) {
        breaks.push({ kind: "deleted", zoneId, eventId: row.id, chainSeq: seq, detail: `chain_seq ${prevSeq! + 1}..${seq - 1} missing` });
      }
      // A first row with seq > 1 and no known predecessor (a range starting after rows that are gone) is
      // taken as the anchor.
      const anchored = prevSeq !== undefined || seq === 1;
      if (anchored) {
        const expected = chainLink(auditKey, prevChain, sha ?? row.content_sha256);
        // after a deletion the link is broken by construction: reported once, as `deleted`
        if (expected !== row.hmac_chain && contentOk && !gap) {
          breaks.push({ kind: "inserted", zoneId, eventId: row.id, chainSeq: seq, detail: "hmac_chain is not the link from the previous row" });
        }
      }
      prevSeq = seq;
      prevChain = row.hmac_chain;
      cursor = seq;
    }
    if (page.rows.length < pageSize) break;
  }

  breaks.push(...(await verifyProducerChains(zoneId, fromSeq, toSeq, options)));
  breaks.sort((a, b) => a.chainSeq - b.chainSeq);
  return { rowsChecked, breaks };
}

/** Forks, broken links and gaps of the producer chains that have rows in the range. */
async function verifyProducerChains(zoneId: string, fromSeq: number, toSeq: number, options: VerifyOptions): Promise<LedgerBreak[]> {
  const now = options.now?.() ?? Date.now();
  const rows = await options.pool.query<{
    id: string;
    chain_seq: string;
    producer_id: string;
    producer_seq: string;
    producer_prev: string | null;
    ingested_at: Date;
    prev_seq: string | null;
    prev_sig: string | null;
    prev_id: string | null;
  }>(
    `SELECT id, chain_seq, producer_id, producer_seq, producer_prev, ingested_at,
            lag(producer_seq) OVER w AS prev_seq, lag(sig) OVER w AS prev_sig, lag(id) OVER w AS prev_id
       FROM audit_events
      WHERE zone_id = $1 AND producer_id IN (
              SELECT DISTINCT producer_id FROM audit_events
               WHERE zone_id = $1 AND chain_seq BETWEEN $2 AND $3 AND producer_id IS NOT NULL)
     WINDOW w AS (PARTITION BY producer_id ORDER BY producer_seq, chain_seq)`,
    [zoneId, fromSeq, Math.min(toSeq, Number.MAX_SAFE_INTEGER)],
  );
  const out: LedgerBreak[] = [];
  for (const r of rows.rows) {
    const seq = Number(r.producer_seq);
    const chainSeq = Number(r.chain_seq);
    if (chainSeq < fromSeq || chainSeq > toSeq) continue;
    const where = `producer ${r.producer_id} seq ${seq}`;
    if (r.prev_seq === null) {
      if (seq === 1 && (r.producer_prev ?? "") !== "") out.push({ kind: "broken_link", zoneId, eventId: r.id, chainSeq, detail: `${where}: first event has a prev` });
      continue;
    }
    const prevSeq = Number(r.prev_seq);
    if (prevSeq === seq) {
      out.push({ kind: "fork", zoneId, eventId: r.id, chainSeq, detail: `${where}: also used by ${r.prev_id}` });
    } else if (prevSeq === seq - 1) {
      if (r.prev_sig !== null && r.producer_prev !== r.prev_sig) {
        out.push({ kind: "broken_link", zoneId, eventId: r.id, chainSeq, detail: `${where}: prev is not the sig of ${r.prev_id}` });
      }
    } else if (now - r.ingested_at.getTime() > options.gapGraceMs) {
      out.push({ kind: "gap", zoneId, eventId: r.id, chainSeq, detail: `${where}: seq ${prevSeq + 1}..${seq - 1} never arrived` });
    }
  }
  return out;
}

/** Maps an occurred_at time range to the chain_seq range of a zone (rows in ingest order). */
export async function seqRangeForTimes(pool: pg.Pool, zoneId: string, from: Date | undefined, to: Date | undefined): Promise<VerifyRange | undefined> {
  const r = await pool.query<{ lo: string | null; hi: string | null }>(
    `SELECT min(chain_seq) AS lo, max(chain_seq) AS hi FROM audit_events
      WHERE zone_id = $1 AND ($2::timestamptz IS NULL OR occurred_at >= $2) AND ($3::timestamptz IS NULL OR occurred_at <= $3)`,
    [zoneId, from ?? null, to ?? null],
  );
  const row = r.rows[0];
  if (row?.lo == null || row.hi == null) return undefined;
  return { fromSeq: from === undefined ? 1 : Number(row.lo), toSeq: to === undefined ? undefined : Number(row.hi) };
}

