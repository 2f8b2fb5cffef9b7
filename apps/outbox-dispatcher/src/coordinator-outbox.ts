/**
 * Drains upstream's second outbox, `caracal_outbox` (written by upstream's Coordinator and API: `producer`,
 * `topic` = the stream, `dedupe_key`, `payload_json`, `status` pending → published | dead), beside
 * `event_outbox`, with the same rules:
 *
 * - **Entry:** the payload flattened as for `event_outbox` (WIRE §2) plus `outbox_id` and `dedupe_key`,
 *   signed (`_sig`, `_sig2`) by the shared publisher: upstream's field layout.
 * - **Order:** per topic, by `created_at`. One replica drains at a time (a transaction-scoped advisory
 *   lock), and a row waiting for its retry holds back the newer rows of its topic.
 * - **Backoff and failure:** a publish that fails is retried with the dispatcher's backoff
 *   (`CARACAL_OUTBOX_BACKOFF_BASE_MS`, doubling, jittered, capped at 60 s) until `CARACAL_OUTBOX_MAX_ATTEMPTS`,
 *   then `dead`; a payload that can never be published (unknown stream, not an object, schema) is `dead` at
 *   once. `last_error` says why. Dead rows stay visible (`outbox status`) and requeueable (`outbox requeue`).
 *
 * Rows are published inside the claiming transaction: a crash before its COMMIT leaves them pending and
 * they are published again (at-least-once; consumers drop duplicates by `outbox_id`).
 */
import { outboxEntry } from "@caracal/outbox";
import type { PublishEntry, RedisClient, StreamPublisher } from "@caracal/streams-core";
import { errorMessage, sleep } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";

import { backoffMs } from "./backoff.js";
import { withTimeout } from "./dispatcher.js";
import type { DispatcherMetrics } from "./metrics.js";

/** Advisory lock key of the drain (one replica at a time keeps each topic in order). */
const DRAIN_LOCK_KEY = 7358120051;

export interface CoordinatorOutboxOptions {
  pool: pg.Pool;
  publisher: StreamPublisher;
  redis: RedisClient;
  metrics: DispatcherMetrics;
  registry: Registry;
  logger: Logger;
  batchSize: number;
  pollMs: number;
  maxAttempts: number;
  publishTimeoutMs: number;
  backoffBaseMs: number;
}

interface Row {
  id: string;
  topic: string;
  dedupe_key: string;
  payload_json: unknown;
  attempts: number;
}

const CLAIM_SQL = `SELECT o.id, o.topic, o.dedupe_key, o.payload_json, o.attempts
  FROM caracal_outbox o
 WHERE o.status = 'pending' AND o.available_at <= now()
   AND NOT EXISTS (
     SELECT 1 FROM caracal_outbox b
      WHERE b.topic = o.topic AND b.status = 'pending' AND b.available_at > now() AND (b.created_at, b.id) < (o.created_at, o.id))
 ORDER BY o.created_at, o.id
 LIMIT $1
 FOR UPDATE OF o`;

export const COORDINATOR_STATS_SQL = `SELECT
  count(*) FILTER (WHERE status = 'pending')::int AS pending,
  count(*) FILTER (WHERE status = 'dead')::int AS dead,
  coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')), 0)::float8 AS oldest_pending_s
FROM caracal_outbox WHERE status <> 'published'`;

export class CoordinatorOutboxDrain {
  state: "idle" | "running" | "stopped" = "idle";
  private wakeUp: (() => void) | undefined;
  private readonly dispatched: Counter<"stream">;

  constructor(private readonly o: CoordinatorOutboxOptions) {
    const registry = o.registry;
    this.dispatched = new Counter({ name: "caracal_outbox_coordinator_dispatched_total", help: "caracal_outbox rows published", labelNames: ["stream"], registers: [registry] });
    let stats: Promise<{ pending: number; dead: number; oldest_pending_s: number } | undefined> | undefined;
    const readStats = () => {
      stats ??= o.pool
        .query(COORDINATOR_STATS_SQL)
        .then((r) => r.rows[0] as { pending: number; dead: number; oldest_pending_s: number })
        .catch(() => undefined)
        .finally(() => setTimeout(() => (stats = undefined), 500).unref());
      return stats;
    };
    const gauge = (name: string, help: string, pick: (s: { pending: number; dead: number; oldest_pending_s: number }) => number) =>
      new Gauge({
        name,
        help,
        registers: [registry],
        async collect() {
          const s = await readStats();
          if (s) this.set(pick(s));
        },
      });
    gauge("caracal_outbox_coordinator_pending_rows", "caracal_outbox rows pending", (s) => s.pending);
    gauge("caracal_outbox_coordinator_dead_rows", "caracal_outbox rows dead (kept for inspection and requeue)", (s) => s.dead);
    gauge("caracal_outbox_coordinator_oldest_pending_age_seconds", "Age of the oldest pending caracal_outbox row (0 when none)", (s) => s.oldest_pending_s);
  }

  /** Drains now instead of at the next poll. */
  wake(): void {
    this.wakeUp?.();
  }

  async run(signal: AbortSignal): Promise<void> {
    this.state = "running";
    try {
      while (!signal.aborted) {
        let moved = 0;
        try {
          moved = await this.drainOnce();
        } catch (error) {
          this.o.metrics.databaseErrors.inc();
          this.o.logger.warn({ err: error }, "caracal_outbox drain failed; retrying");
        }
        if (moved >= this.o.batchSize) continue;
        await new Promise<void>((resolve) => {
          this.wakeUp = resolve;
          void sleep(this.o.pollMs, signal).then(() => resolve());
        });
        this.wakeUp = undefined;
      }
    } finally {
      this.state = "stopped";
    }
  }

  /** One batch in one transaction; resolves with the rows published, retried or failed. */
  async drainOnce(): Promise<number> {
    if (this.o.redis.status !== "ready") return 0;
    const client = await this.o.pool.connect();
    try {
      await client.query("BEGIN");
      const locked = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_xact_lock($1) AS ok", [DRAIN_LOCK_KEY]);
      if (locked.rows[0]?.ok !== true) {
        await client.query("COMMIT");
        return 0;
      }
      const { rows } = await client.query<Row>(CLAIM_SQL, [this.o.batchSize]);
      if (rows.length === 0) {
        await client.query("COMMIT");
        return 0;
      }
      const published: string[] = [];
      const dead: Array<{ id: string; error: string }> = [];
      const retried: Array<{ id: string; error: string; delayMs: number }> = [];
      const entries: PublishEntry[] = [];
      const entryRows: Row[] = [];
      for (const row of rows) {
        const check = outboxEntry(row.topic, row.payload_json, row.id);
        if (!check.ok) {
          this.o.metrics.failures.inc({ reason: check.reason });
          dead.push({ id: row.id, error: `${check.reason}: ${check.message}` });
          continue;
        }
        entries.push({ stream: row.topic, fields: { ...check.fields, dedupe_key: row.dedupe_key } });
        entryRows.push(row);
      }
      let batchError: string | undefined;
      let outcomes: Awaited<ReturnType<StreamPublisher["publishBatch"]>> | undefined;
      try {
        outcomes = await withTimeout(this.o.publisher.publishBatch(entries), this.o.publishTimeoutMs);
        if (outcomes === undefined) batchError = `publish took over ${this.o.publishTimeoutMs} ms`;
      } catch (error) {
        batchError = errorMessage(error);
      }
      // a topic whose row failed keeps its newer rows of this batch pending, untouched (order)
      const blocked = new Set<string>();
      entryRows.forEach((row, i) => {
        const outcome = outcomes?.[i];
        if (blocked.has(row.topic)) return;
        if (batchError === undefined && outcome?.ok === true) {
          published.push(row.id);
          this.dispatched.inc({ stream: row.topic });
          return;
        }
        blocked.add(row.topic);
        const error = batchError ?? (outcome && !outcome.ok ? errorMessage(outcome.error) : "not published");
        this.o.metrics.failures.inc({ reason: batchError?.startsWith("publish took") ? "publish_timeout" : "redis_error" });
        if (row.attempts + 1 >= this.o.maxAttempts) {
          this.o.metrics.failures.inc({ reason: "max_attempts" });
          dead.push({ id: row.id, error });
        } else retried.push({ id: row.id, error, delayMs: backoffMs(row.attempts + 1, this.o.backoffBaseMs) });
      });
      if (published.length > 0) {
        await client.query(
          "UPDATE caracal_outbox SET status = 'published', attempts = attempts + 1, published_at = now(), updated_at = now(), last_error = NULL WHERE id = ANY($1::text[])",
          [published],
        );
      }
      if (retried.length > 0) {
        await client.query(
          `UPDATE caracal_outbox o SET attempts = o.attempts + 1, available_at = now() + r.delay_ms * interval '1 millisecond', last_error = left(r.error, 2000), updated_at = now()
             FROM unnest($1::text[], $2::float8[], $3::text[]) AS r(id, delay_ms, error) WHERE o.id = r.id`,
          [retried.map((r) => r.id), retried.map((r) => r.delayMs), retried.map((r) => r.error)],
        );
      }
      if (dead.length > 0) {
        await client.query(
          `UPDATE caracal_outbox o SET status = 'dead', attempts = o.attempts + 1, last_error = left(r.error, 2000), updated_at = now()
             FROM unnest($1::text[], $2::text[]) AS r(id, error) WHERE o.id = r.id`,
          [dead.map((r) => r.id), dead.map((r) => r.error)],
        );
        this.o.logger.error({ rows: dead.map((d) => d.id) }, "caracal_outbox rows dead: see last_error, requeue with `caracal-streams outbox requeue`");
      }
      await client.query("COMMIT");
      return rows.length;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }
}
