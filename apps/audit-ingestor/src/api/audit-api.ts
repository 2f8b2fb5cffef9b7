/**
 * The audit service's operator routes, as upstream's audit service offers them (so operator tooling
 * built for upstream keeps working), served beside /healthz on the ops port:
 *
 * - `GET /api/audit/search?zone_id=&since=&until=&decision=&request_id=&event_type=&limit=&cursor=`:
 *   a zone's events in `chain_seq` order after `cursor`, `since` to `until` on `occurred_at` (RFC 3339;
 *   default the last 24 h), at most `limit` (default 100, max 1000). Body: `{"events": [{"Event": {...},
 *   "IngestedAt", "ContentSHA256", "PrevContentSHA256", "ChainHMAC", "ChainSeq"}], "next_cursor"}`, the
 *   shape upstream returns.
 * - `GET /api/audit/dlq?limit=&start=`, `GET /api/audit/dlq/{id}`: the dead letters of the audit stream.
 * - `POST /api/audit/dlq/replay?limit=`: re-publishes the replayable letters (those that failed for a
 *   transient or database reason, not for their content) to the audit stream and deletes them from the
 *   dead letters. A letter re-published twice is stored once: the ledger treats an identical event as a
 *   duplicate.
 *
 * Every route answers 404 when AUDIT_ADMIN_TOKEN is unset, and 401 unless the request carries
 * `Authorization: Bearer <token>`, compared in constant time.
 */
import { createHash, timingSafeEqual } from "node:crypto";

import type { DeadLetterRecord, RedisClient, SignaturePolicy } from "@caracal/streams-core";
import { StreamPublisher, Topics, readDeadLetters, streamKey } from "@caracal/streams-core";
import { Hono } from "hono";
import type { Context } from "hono";
import type { Logger } from "pino";
import type pg from "pg";

const TOPIC = Topics.auditEvents;
const DLQ_STREAM = TOPIC.deadLetterStream as string;
const DAY_MS = 86_400_000;
const MAX_LIMIT = 1000;

/** Dead-letter reasons that say nothing against the event itself: replaying may store it. */
export const REPLAYABLE_REASONS: ReadonlySet<string> = new Set(["max_deliveries_exceeded", "permanent_error"]);

export interface AuditApiOptions {
  pool: pg.Pool;
  redis: RedisClient;
  /** Re-signs replayed frames (`_sig`). */
  signing: SignaturePolicy;
  keyPrefix: string;
  /** AUDIT_ADMIN_TOKEN; undefined turns every route off (404). */
  adminToken: string | undefined;
  logger: Logger;
}

/** Constant-time comparison of two secrets of any length (both hashed to 32 bytes first). */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

function limitOf(text: string | undefined, fallback: number): number | "invalid" {
  if (text === undefined || text === "") return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) return "invalid";
  return Math.min(n, MAX_LIMIT);
}

function timeOf(text: string | undefined, fallback: Date): Date | "invalid" {
  if (text === undefined || text === "") return fallback;
  const t = new Date(text);
  return Number.isNaN(t.getTime()) ? "invalid" : t;
}

function entryAgeSeconds(id: string, now: number): number {
  const ms = Number(id.split("-")[0]);
  return Number.isFinite(ms) ? Math.max(0, Math.floor((now - ms) / 1000)) : 0;
}

interface DlqEntryView {
  id: string;
  source_id?: string;
  reason: string;
  received_at?: string;
  age_seconds: number;
  replayable: boolean;
  event_id?: string;
  zone_id?: string;
  event_type?: string;
  request_id?: string;
  decision?: string;
  source_sig?: string;
  source_event?: unknown;
  fields?: Record<string, string>;
}

function dlqView(letter: DeadLetterRecord, now: number, detail: boolean): DlqEntryView {
  const data = letter.original.data;
  const view: DlqEntryView = {
    id: letter.id,
    reason: letter.reason,
    age_seconds: entryAgeSeconds(letter.id, now),
    replayable: REPLAYABLE_REASONS.has(letter.reason) && (data ?? "").trim() !== "",
  };
  if (letter.srcId !== "") view.source_id = letter.srcId;
  if (letter.receivedAt !== "") view.received_at = letter.receivedAt;
  if (letter.original.sig !== undefined) view.source_sig = letter.original.sig;
  if (data !== undefined) {
    try {
      const event = JSON.parse(data) as Record<string, unknown>;
      for (const [from, to] of [
        ["id", "event_id"],
        ["zone_id", "zone_id"],
        ["event_type", "event_type"],
        ["request_id", "request_id"],
        ["decision", "decision"],
      ] as const) {
        if (typeof event[from] === "string") view[to] = event[from];
      }
      if (detail) view.source_event = event;
    } catch {
      // not JSON: the letter is listed with what its metadata says
    }
  }
  if (detail) view.fields = { ...letter.fields };
  return view;
}

export function auditApiRoutes(options: AuditApiOptions): Hono {
  const app = new Hono();
  const dlqKey = streamKey(DLQ_STREAM, options.keyPrefix);
  const publisher = new StreamPublisher({ redis: options.redis, signing: options.signing, keyPrefix: options.keyPrefix });

  app.use("/api/audit/*", async (c, next) => {
    const token = options.adminToken;
    if (token === undefined || token === "") return c.notFound();
    const auth = c.req.header("Authorization") ?? "";
    const given = auth.startsWith("Bearer ") ? auth.slice("Bearer ".length) : "";
    if (!sameSecret(given, token)) {
      c.header("WWW-Authenticate", 'Bearer realm="caracal-audit"');
      return c.text("unauthorized", 401);
    }
    await next();
  });

  app.get("/api/audit/search", async (c) => {
    const q = (name: string) => c.req.query(name);
    const zone = q("zone_id");
    if (zone === undefined || zone === "") return c.text("zone_id is required", 400);
    const now = new Date();
    const since = timeOf(q("since"), new Date(now.getTime() - DAY_MS));
    const until = timeOf(q("until"), now);
    if (since === "invalid" || until === "invalid") return c.text("since and until are RFC 3339 times", 400);
    const limit = limitOf(q("limit"), 100);
    if (limit === "invalid") return c.text("limit must be a positive integer", 400);
    const cursorText = q("cursor") ?? "";
    if (cursorText !== "" && !/^\d+$/.test(cursorText)) return c.text("cursor must be a chain_seq", 400);
    try {
      const { rows } = await options.pool.query<{
        event: Record<string, unknown>;
        ingested_at: Date;
        content_sha256: string;
        prev_content_sha256: string | null;
        hmac_chain: string;
        chain_seq: string;
      }>(
        `SELECT jsonb_strip_nulls(jsonb_build_object(
                  'id', e.id, 'zone_id', e.zone_id, 'event_type', e.event_type, 'request_id', e.request_id,
                  'decision', e.decision, 'policy_set_id', e.policy_set_id, 'policy_set_version_id', e.policy_set_version_id,
                  'manifest_sha', e.manifest_sha, 'evaluation_status', e.evaluation_status,
                  'metadata_json', e.metadata_json))
                || jsonb_build_object('determining_policies_json', e.determining_policies_json,
                                      'diagnostics_json', e.diagnostics_json, 'occurred_at', e.occurred_at) AS event,
                e.ingested_at, e.content_sha256, e.hmac_chain, e.chain_seq,
                (SELECT p.content_sha256 FROM audit_events p WHERE p.zone_id = e.zone_id AND p.chain_seq = e.chain_seq - 1) AS prev_content_sha256
           FROM audit_events e
          WHERE e.zone_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
            AND ($4 = '' OR e.decision = $4) AND ($5 = '' OR e.request_id = $5) AND ($6 = '' OR e.event_type = $6)
            AND e.chain_seq > $7
          ORDER BY e.chain_seq
          LIMIT $8`,
        [zone, since, until, q("decision") ?? "", q("request_id") ?? "", q("event_type") ?? "", cursorText === "" ? 0 : cursorText, limit],
      );
      const events = rows.map((r) => ({
        Event: r.event,
        IngestedAt: r.ingested_at.toISOString(),
        ContentSHA256: r.content_sha256,
        PrevContentSHA256: r.prev_content_sha256 ?? "",
        ChainHMAC: r.hmac_chain,
        ChainSeq: Number(r.chain_seq),
      }));
      return c.json({ events, next_cursor: events.length > 0 ? String(events[events.length - 1]!.ChainSeq) : "" });
    } catch (error) {
      options.logger.error({ err: error }, "audit search failed");
      return c.text("search failed", 500);
    }
  });

  app.get("/api/audit/dlq", async (c) => {
    const limit = limitOf(c.req.query("limit"), 100);
    if (limit === "invalid") return c.text("limit must be a positive integer", 400);
    const start = c.req.query("start");
    try {
      const letters = await readDeadLetters(options.redis, dlqKey, { limit, ...(start ? { start } : {}) });
      const now = Date.now();
      const entries = letters.map((l) => dlqView(l, now, false));
      return c.json({ entries, next_cursor: entries.length > 0 ? entries[entries.length - 1]!.id : "" });
    } catch (error) {
      options.logger.error({ err: error }, "audit dlq list failed");
      return c.text("dlq list failed", 500);
    }
  });

  app.get("/api/audit/dlq/:id", async (c) => {
    const id = c.req.param("id");
    if (!/^\d+-\d+$/.test(id)) return c.text("id must be a stream entry id", 400);
    try {
      const [letter] = await readDeadLetters(options.redis, dlqKey, { limit: 1, ids: [id] });
      if (letter === undefined) return c.notFound();
      return c.json(dlqView(letter, Date.now(), true));
    } catch (error) {
      options.logger.error({ err: error }, "audit dlq detail failed");
      return c.text("dlq detail failed", 500);
    }
  });

  app.post("/api/audit/dlq/replay", async (c: Context) => {
    const limit = limitOf(c.req.query("limit"), 100);
    if (limit === "invalid") return c.text("limit must be a positive integer", 400);
    const summary = { scanned: 0, replayed: 0, skipped: 0 };
    try {
      const letters = await readDeadLetters(options.redis, dlqKey, { limit });
      for (const letter of letters) {
        summary.scanned++;
        const data = letter.original.data;
        if (!REPLAYABLE_REASONS.has(letter.reason) || data === undefined || data.trim() === "") {
          summary.skipped++;
          continue;
        }
        // The frame as the producer sent it (id, data, sig, outbox_id, ...), re-signed for this stream.
        const fields: Record<string, string> = {};
        for (const [k, v] of Object.entries(letter.original)) if (k !== "_sig" && k !== "_sig2") fields[k] = v;
        await publisher.publish(TOPIC.stream, fields);
        await options.redis.xdel(dlqKey, letter.id);
        summary.replayed++;
      }
      return c.json(summary);
    } catch (error) {
      options.logger.error({ err: error, ...summary }, "audit dlq replay failed");
      return c.text("dlq replay failed", 500);
    }
  });

  return app;
}
