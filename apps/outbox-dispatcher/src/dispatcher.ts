import { queryResult } from "@caracal/db";
import type { OutboxRejectReason } from "@caracal/outbox";
import { outboxEntry } from "@caracal/outbox";
import type { PublishEntry, PublishOutcome, RedisClient, StreamPublisher } from "@caracal/streams-core";
import { errorMessage } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";

import { backoffMs } from "./backoff.js";
import type { DispatcherMetrics, FailureReason } from "./metrics.js";
import type { ClaimedRow, ExchangeRow, RowOutcome } from "./sql.js";
import { EXCHANGE_SQL, EXCHANGE_TYPES, exchangeParams } from "./sql.js";

export interface DispatcherOptions {
  pool: pg.Pool;
  /** Publishes with `maxLenFor: () => CARACAL_OUTBOX_STREAM_MAXLEN` and the deployment's key prefix. */
  publisher: StreamPublisher;
  /** The publisher's connection: no row is claimed while it is not `ready` (rows stay pending, attempts untouched). */
  redis: RedisClient;
  metrics: DispatcherMetrics;
  logger: Logger;
  /** `locked_by` of this replica; unique per process. */
  owner: string;
  /** Rows per claim. Default 32. */
  batchSize?: number;
  /** Fallback poll interval. Default 250 ms. */
  pollMs?: number;
  /** Attempts after which a row is failed. Default 100. */
  maxAttempts?: number;
  /** Lease of a claimed row. Default 30,000 ms. */
  leaseMs?: number;
  /** A publish slower than this fails the batch (transient). Default 5,000 ms. */
  publishTimeoutMs?: number;
  /** First retry delay (doubling, jittered, capped at 60 s). Default 500 ms. */
  backoffBaseMs?: number;
}

export type DispatcherState = "idle" | "running" | "draining" | "stopped" | "failed";

/**
 * Moves committed `event_outbox` rows to their streams: claim (lease) -> sign + pipelined XADD -> mark.
 * The mark of batch N travels with the claim of batch N+2, so a batch costs one PostgreSQL and one Redis
 * round trip. At-least-once: a crash between XADD and mark republishes the row after its lease, with
 * the same `outbox_id`. `run` is called once; `wake` is safe to call at any time (NOTIFY handler).
 */
export class OutboxDispatcher {
  state: DispatcherState = "idle";
  private readonly o: Required<DispatcherOptions>;
  private woken = false;
  private wakeUp: (() => void) | undefined;
  /**
   * The connection `outbox_exchange` runs on, held from the first exchange to the end of `run`. A pooled
   * `pool.query` would send the statement only on the next tick, after this batch's signing; on a held
   * idle connection it is written at once, so PostgreSQL runs the exchange while this process signs.
   */
  private connection: pg.PoolClient | undefined;

  constructor(options: DispatcherOptions) {
    this.o = {
      batchSize: 32,
      pollMs: 250,
      maxAttempts: 100,
      leaseMs: 30_000,
      publishTimeoutMs: 5_000,
      backoffBaseMs: 500,
      ...options,
    };
  }

  /** Ends the current wait at once (a NOTIFY arrived, or a test wants a pass now). */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /**
   * Dispatches until `signal` aborts, then finishes the in-flight batch and writes its outcomes.
   *
   * Two stages overlap: once batch N's replies are in, one PostgreSQL round trip writes N's outcomes and
   * claims batch N+2 while batch N+1 (claimed by the previous round trip) is signed and published. So the
   * database works while this process signs and Redis answers, and a batch waits for the slower of the
   * two, not for their sum (when the database has CPU of its own: where it shares two cores with this
   * process, `bench:outbox` measures close to the sum). Batch N+1 is published only after N's replies are in, so entries of a stream
   * keep their order; rows of a stream that failed in N are released from N+1 unsent (N+2 is claimed
   * after N's retries are written, so their streams are blocked there). At most two published batches
   * are unmarked at any time (N being marked, N+1 being published): a crash republishes at most those.
   */
  async run(signal: AbortSignal): Promise<void> {
    if (this.state !== "idle") throw new Error(`dispatcher already ${this.state}`);
    this.state = "running";
    const onAbort = () => this.wake();
    signal.addEventListener("abort", onAbort);
    let marks: RowOutcome[] = [];
    let inFlight: { promise: Promise<RowOutcome[]>; rows: readonly ClaimedRow[]; started: number } | undefined;
    /** Claimed (leased) and not yet published; `started` is when its claim was sent. */
    let claimed: { rows: ClaimedRow[]; started: number } = { rows: [], started: 0 };
    let dbFailures = 0;
    let guardDelayMs = 0;
    const settle = async (): Promise<Set<string>> => {
      if (inFlight === undefined) return new Set();
      const { promise, rows, started } = inFlight;
      inFlight = undefined;
      const outcomes = await promise;
      marks.push(...outcomes);
      this.o.metrics.batchDuration.observe((performance.now() - started) / 1000);
      const byId = new Map(rows.map((r) => [r.id, r.stream_name]));
      return new Set(outcomes.filter((o) => o.kind !== "dispatched").map((o) => byId.get(o.id) as string));
    };
    try {
      while (!signal.aborted) {
        const failedStreams = await settle();
        const redisUp = this.o.redis.status === "ready";
        const started = performance.now();
        const writing = marks;
        const exchanging = this.exchange(writing, redisUp ? this.o.batchSize : 0);
        exchanging.catch(() => undefined);
        if (claimed.rows.length > 0) {
          inFlight = { promise: this.publish(claimed.rows, failedStreams), rows: claimed.rows, started: claimed.started };
          claimed = { rows: [], started: 0 };
        }
        let guarded: boolean;
        try {
          let rows: ClaimedRow[];
          ({ rows, guarded } = await exchanging);
          claimed = { rows, started };
          marks = marks.slice(writing.length);
          dbFailures = 0;
        } catch (error) {
          dbFailures++;
          this.o.metrics.databaseErrors.inc();
          this.o.logger.warn({ err: errorMessage(error), failures: dbFailures }, "outbox claim/mark failed: retrying");
          await settle();
          await this.sleep(backoffMs(dbFailures, this.o.pollMs, 0.5), signal, false);
          continue;
        }
        if (claimed.rows.length > 0) {
          guardDelayMs = 0;
          continue;
        }
        if (inFlight !== undefined || marks.length > 0) continue;
        if (guarded && redisUp) {
          // Committed rows wait behind a running transaction; it may not notify when it ends.
          guardDelayMs = Math.min(guardDelayMs === 0 ? 2 : guardDelayMs * 2, this.o.pollMs);
          await this.sleep(guardDelayMs, signal, true);
        } else {
          guardDelayMs = 0;
          await this.sleep(this.o.pollMs, signal, true);
        }
      }
      this.state = "draining";
      await settle();
      // Claimed but never sent: give the rows back now rather than after their lease.
      marks.push(...claimed.rows.map((r): RowOutcome => ({ kind: "release", id: r.id })));
      await this.flush(marks);
      this.state = "stopped";
    } catch (error) {
      this.state = "failed";
      throw error;
    } finally {
      this.releaseConnection();
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Gives the held connection back to the pool (destroyed when `error` is given). */
  private releaseConnection(error?: unknown): void {
    const client = this.connection;
    this.connection = undefined;
    client?.release(error instanceof Error ? error : error === undefined ? undefined : true);
  }

  /** Writes the last outcomes on shutdown; a failure only costs duplicates after the lease. */
  private async flush(marks: RowOutcome[]): Promise<void> {
    for (let attempt = 1; marks.length > 0 && attempt <= 3; attempt++) {
      try {
        await this.exchange(marks, 0);
        return;
      } catch (error) {
        this.o.logger.warn({ err: errorMessage(error), attempt }, "outbox: could not mark the last batch");
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }

  /**
   * One round trip, one transaction: `outbox_exchange` writes the outcomes of the previous batch, then
   * claims up to `limit` rows (0: write only) under the claim lock.
   */
  private async exchange(marks: readonly RowOutcome[], limit: number): Promise<{ rows: ClaimedRow[]; guarded: boolean }> {
    if (marks.length === 0 && limit === 0) return { rows: [], guarded: false };
    const client = this.connection ?? (this.connection = await this.o.pool.connect());
    let rows: ExchangeRow[];
    try {
      ({ rows } = await queryResult<ExchangeRow>(client, {
        name: "outbox_exchange",
        text: EXCHANGE_SQL,
        values: exchangeParams(marks, limit, this.o.leaseMs, this.o.owner),
        types: EXCHANGE_TYPES,
      }));
    } catch (error) {
      // The connection may be broken: destroy it, the next exchange takes a fresh one.
      this.releaseConnection(error);
      throw error;
    }
    const claimed: ClaimedRow[] = [];
    let guarded = false;
    for (const row of rows) {
      if (row.id === null) guarded = row.guarded;
      else claimed.push(row as ClaimedRow);
    }
    return { rows: claimed, guarded };
  }

  /**
   * Publishes a claimed batch in dispatch order; never throws, every row gets an outcome. Rows of
   * `holdStreams` (a stream that just failed) are released unsent, so they cannot overtake the failed rows.
   */
  private async publish(rows: readonly ClaimedRow[], holdStreams: ReadonlySet<string>): Promise<RowOutcome[]> {
    const outcomes: RowOutcome[] = [];
    const entries: PublishEntry[] = [];
    const sent: ClaimedRow[] = [];
    for (const row of rows) {
      if (holdStreams.has(row.stream_name)) {
        outcomes.push({ kind: "release", id: row.id });
        continue;
      }
      let payload: unknown;
      try {
        payload = JSON.parse(row.payload_json);
      } catch {
        payload = undefined; // never from jsonb; outboxEntry then fails the row as payload_invalid
      }
      const check = outboxEntry(row.stream_name, payload, row.id);
      if (!check.ok) {
        this.reject(row, check.reason, check.message, outcomes);
        continue;
      }
      entries.push({ stream: check.topic.stream, fields: check.fields });
      sent.push(row);
    }
    if (entries.length === 0) return outcomes;
    let results: PublishOutcome[] | undefined;
    let batchError: { reason: FailureReason; message: string } | undefined;
    try {
      results = await withTimeout(this.o.publisher.publishBatch(entries), this.o.publishTimeoutMs);
      if (results === undefined) batchError = { reason: "publish_timeout", message: `publish took over ${this.o.publishTimeoutMs} ms` };
    } catch (error) {
      batchError = { reason: "redis_error", message: errorMessage(error) };
    }
    if (batchError !== undefined) {
      this.o.logger.warn({ rows: sent.length, reason: batchError.reason, err: batchError.message }, "outbox publish failed: rows will be retried");
      // One delay for the whole batch, so its rows come due together and keep their order.
      const attempt = Math.max(...sent.map((r) => r.attempts)) + 1;
      const delayMs = backoffMs(attempt, this.o.backoffBaseMs);
      for (const row of sent) this.retry(row, batchError.reason, batchError.message, delayMs, outcomes);
      return outcomes;
    }
    const dispatchedByStream = new Map<string, number>();
    sent.forEach((row, i) => {
      const result = results?.[i];
      if (result?.ok) {
        outcomes.push({ kind: "dispatched", id: row.id, entryId: result.id });
        dispatchedByStream.set(row.stream_name, (dispatchedByStream.get(row.stream_name) ?? 0) + 1);
      } else {
        const message = result ? errorMessage(result.error) : "no reply";
        this.o.logger.warn({ outboxId: row.id, stream: row.stream_name, err: message }, "outbox XADD failed: row will be retried");
        this.retry(row, "redis_error", message, backoffMs(row.attempts + 1, this.o.backoffBaseMs), outcomes);
      }
    });
    for (const [stream, n] of dispatchedByStream) this.o.metrics.dispatched.inc({ stream }, n);
    return outcomes;
  }

  private retry(row: ClaimedRow, reason: FailureReason, message: string, delayMs: number, outcomes: RowOutcome[]): void {
    const failNow = row.attempts + 1 >= this.o.maxAttempts;
    this.o.metrics.failures.inc({ reason });
    if (failNow) {
      this.o.metrics.failures.inc({ reason: "max_attempts" });
      this.o.logger.error({ outboxId: row.id, stream: row.stream_name, attempts: row.attempts + 1 }, "outbox row failed after max attempts");
    }
    outcomes.push({ kind: "retry", id: row.id, delayMs, error: `${reason}: ${message}`, failNow });
  }

  private reject(row: ClaimedRow, reason: OutboxRejectReason, message: string, outcomes: RowOutcome[]): void {
    this.o.metrics.failures.inc({ reason });
    this.o.logger.error({ outboxId: row.id, stream: row.stream_name, reason, err: message }, "outbox row can never be published: failed");
    outcomes.push({ kind: "failed", id: row.id, error: `${reason}: ${message}` });
  }

  /** Waits `ms`, or less if aborted, or (when `wakeable`) if woken by a NOTIFY. */
  private sleep(ms: number, signal: AbortSignal, wakeable: boolean): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    if (wakeable && this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        if (wakeable) this.woken = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = () => {
        if (wakeable || signal.aborted) done();
      };
    });
  }
}

/** Resolves to undefined on timeout; the late result is ignored. */
export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  promise.catch(() => undefined);
  try {
    return await Promise.race([promise, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
