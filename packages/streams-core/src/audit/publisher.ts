/**
 * The audit publisher of producers (seed 001 "Publication", WIRE §6): events are buffered in-process and
 * flushed every `flushIntervalMs` (50 ms) or at `maxBatchSize` (1,000) events, whichever comes first, as
 * ONE pipelined XADD batch to `caracal.audit.events`. A batch Redis does not take (error or timeout) is
 * written to the replay directory and re-published later; nothing is ever dropped.
 *
 * Guarantees:
 * - at-least-once: an event is "handled" only once Redis acknowledged its XADD or its replay file was
 *   fsynced. A timed-out XADD may still land later, so a replayed event can appear twice (the ingestor
 *   treats the same id with the same content as a no-op).
 * - order per producer: batches leave in publish order; once a batch is spilled, later batches go to disk
 *   behind it until the replay directory has been drained, so a consumer never sees seq n+1 long before n.
 * - bounded memory: at most `maxBufferedEvents` events are held (buffered + in flight); `publish` awaits
 *   (backpressure) while the buffer is full, it never drops.
 * - producer chain (WIRE §6): `data.chain = {producer, seq, prev}`, producer id new per instance, seq
 *   1, 2, 3, ... per zone in publish order, prev = `sig` of this producer's previous event in the zone.
 *
 * Concurrency: `publish` and `flush` may be called concurrently; batches, spills and replays run one at a
 * time on one internal lane. `close` is idempotent. The Redis client belongs to the caller and stays open.
 */
import { randomUUID } from "node:crypto";

import type { Logger } from "pino";

import type { Fields } from "../codec.js";
import { CaracalError, RejectedMessageError, errorMessage } from "../errors.js";
import { StreamPublisher } from "../publisher.js";
import type { RedisClient } from "../redis.js";
import { Topics } from "../registry.js";
import type { AuditEvent } from "../schemas.js";
import { auditEventSchema, formatIssues } from "../schemas.js";
import type { SignaturePolicy } from "../signing.js";
import { sleep } from "../timing.js";
import { encodeAuditFrame } from "./frame.js";
import {
  ReplayFileFormatError,
  listReplayFiles,
  quarantineReplayFile,
  readReplayFile,
  removeReplayFile,
  replayFileName,
  writeReplayFile,
} from "./replay-files.js";

/** An audit event as a producer hands it over; any `chain` it carries is replaced by the publisher's. */
export type AuditEventInput = AuditEvent;

/** Hooks the publisher calls; `createPrometheusAuditPublisherMetrics` implements them with prom-client. */
export interface AuditPublisherMetricsHooks {
  /** Events XADDed from live batches. */
  published?(count: number): void;
  /** Events written to the replay directory. */
  spilled?(count: number): void;
  /** Events re-published from replay files (files deleted afterwards). */
  replayed?(count: number): void;
  /** Events held in memory (buffered + in flight), after every change. */
  bufferDepth?(depth: number): void;
  /** One pipelined XADD round trip (live or replay) of `size` entries, successful or not. */
  batchSent?(size: number, seconds: number): void;
}

export interface AuditPublisherOptions {
  /** Connection for XADD; owned by the caller (not closed by `close`). */
  redis: RedisClient;
  /** Stream signature policy: `_sig` is added when it has a key. */
  signing: SignaturePolicy;
  /** AUDIT_HMAC_KEY: every frame gets `sig` = HMAC of its `data`. Undefined (dev only): no `sig`, `prev` is empty. */
  auditKey: Buffer | undefined;
  /** Prepended to the stream key (tests, tenants). Default "". */
  keyPrefix?: string;
  /**
   * AUDIT_REPLAY_DIR. Without it a batch Redis refuses stays in memory and is retried (publishers block
   * once the buffer is full). Default: none.
   */
  replayDir?: string;
  /** Longest time an event waits in the buffer before its batch is sent. Default 50 ms. */
  flushIntervalMs?: number;
  /** Events per XADD pipeline; a full batch is sent at once. Default 1,000. */
  maxBatchSize?: number;
  /** Events held in memory (buffered + in flight) before `publish` waits. Default 10,000. */
  maxBufferedEvents?: number;
  /** A pipeline without reply after this long counts as failed (Redis unavailable). Default 2,000 ms. */
  publishTimeoutMs?: number;
  /** While spilled files wait, how often replaying them is tried. Default 1,000 ms. */
  replayIntervalMs?: number;
  /** Producer id of the chain. Default: a random UUID (new per instance, so restarts start new chains). */
  producerId?: string;
  /** Adds the producer chain to `data`. Default true. */
  chain?: boolean;
  /** Validates every event with the audit event schema in `publish`. Default true. */
  validate?: boolean;
  metrics?: AuditPublisherMetricsHooks;
  logger?: Logger;
}

/** `publish` after `close` was called. */
export class AuditPublisherClosedError extends CaracalError {
  readonly code = "AUDIT_PUBLISHER_CLOSED";
  readonly permanent = true;
}

export type AuditPublisherState = "running" | "closing" | "closed";

const STREAM = Topics.auditEvents.stream;
const RETRY_BACKOFF_MS = 250;

export class AuditPublisher {
  readonly producerId: string;
  private readonly publisher: StreamPublisher;
  private readonly flushIntervalMs: number;
  private readonly maxBatchSize: number;
  private readonly maxBufferedEvents: number;
  private readonly publishTimeoutMs: number;
  private readonly replayIntervalMs: number;
  private readonly replayDir: string | undefined;
  private readonly startedAtMs = Date.now();
  private readonly metrics: AuditPublisherMetricsHooks;

  private stateValue: AuditPublisherState = "running";
  private readonly buffer: Fields[] = [];
  private inFlight = 0;
  private accepted = 0;
  private handled = 0;
  private readonly zones = new Map<string, { seq: number; prev: string }>();
  private readonly spaceWaiters: Array<() => void> = [];
  private readonly flushWaiters: Array<{ target: number; resolve: () => void }> = [];
  private timer: NodeJS.Timeout | undefined;
  /** Set when the flush timer fired: the next flush job sends a partial batch. */
  private due = false;
  private replayTimer: NodeJS.Timeout | undefined;
  private lane: Promise<void> = Promise.resolve();
  private flushQueued = false;
  /** Files this instance spilled that are not yet replayed; non-empty means later batches go to disk too. */
  private readonly ownFiles = new Set<string>();
  /** Files found in the replay directory at start that are not yet replayed. */
  private backlog = false;
  private nextReplayAt = 0;
  private ordinal = 0;
  private closePromise: Promise<void> | undefined;

  constructor(private readonly options: AuditPublisherOptions) {
    this.producerId = options.producerId ?? randomUUID();
    this.publisher = new StreamPublisher({ redis: options.redis, signing: options.signing, keyPrefix: options.keyPrefix });
    this.flushIntervalMs = options.flushIntervalMs ?? 50;
    this.maxBatchSize = options.maxBatchSize ?? 1000;
    this.maxBufferedEvents = Math.max(options.maxBufferedEvents ?? 10_000, this.maxBatchSize);
    this.publishTimeoutMs = options.publishTimeoutMs ?? 2000;
    this.replayIntervalMs = options.replayIntervalMs ?? 1000;
    this.replayDir = options.replayDir;
    this.metrics = options.metrics ?? {};
  }

  get state(): AuditPublisherState {
    return this.stateValue;
  }

  /** Events held in memory: buffered plus in flight. */
  get depth(): number {
    return this.buffer.length + this.inFlight;
  }

  /** True while spilled files wait to be replayed (live batches go to disk meanwhile). */
  get degraded(): boolean {
    return this.replayDir !== undefined && (this.ownFiles.size > 0 || this.backlog);
  }

  /**
   * Re-publishes the files left in the replay directory by earlier processes, oldest first, deleting each
   * only after every line was XADDed. Resolves with true when the directory was drained; false when Redis
   * refused (the files stay, and are retried every `replayIntervalMs` while this publisher runs).
   */
  async start(): Promise<boolean> {
    if (this.replayDir === undefined) return true;
    this.backlog = (await listReplayFiles(this.replayDir)).length > 0;
    if (!this.backlog) return true;
    let drained = false;
    await this.runOnLane(async () => {
      drained = await this.replayAll();
    });
    this.armReplayTimer();
    return drained;
  }

  /**
   * Accepts one event. Resolves once the event is in the buffer (not once it is in Redis: use `flush`);
   * waits while the buffer is full. Throws `RejectedMessageError("schema_invalid")` for an invalid event
   * and `AuditPublisherClosedError` after `close`.
   */
  publish(event: AuditEventInput): Promise<void> {
    if (this.stateValue !== "running") return Promise.reject(new AuditPublisherClosedError("audit publisher is closed"));
    if (this.options.validate !== false) {
      const result = auditEventSchema.safeParse(event);
      if (!result.success) return Promise.reject(new RejectedMessageError("schema_invalid", `audit event: ${formatIssues(result.error)}`));
    }
    if (this.spaceWaiters.length === 0 && this.depth < this.maxBufferedEvents) {
      this.accept(event);
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      this.spaceWaiters.push(() => {
        this.accept(event);
        resolve();
      });
    });
  }

  /** Resolves once every event accepted before the call was XADDed or fsynced to the replay directory. */
  flush(): Promise<void> {
    const target = this.accepted;
    if (this.handled >= target) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.flushWaiters.push({ target, resolve }));
    this.requestFlush();
    return done;
  }

  /**
   * Stops accepting events, then flushes everything (including publishers waiting for space) to Redis or
   * the replay directory. Idempotent. Without a replay directory and with Redis down, it waits for Redis.
   */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.stateValue = "closing";
      while (this.depth > 0 || this.spaceWaiters.length > 0 || this.handled < this.accepted) {
        await this.flush();
        await this.lane;
      }
      this.clearTimer();
      clearTimeout(this.replayTimer);
      this.replayTimer = undefined;
      this.stateValue = "closed";
    })();
    return this.closePromise;
  }

  private accept(event: AuditEventInput): void {
    let full: AuditEvent = event;
    if (this.options.chain !== false) {
      const link = this.zones.get(event.zone_id) ?? { seq: 0, prev: "" };
      full = { ...event, chain: { producer: this.producerId, seq: link.seq + 1, prev: link.prev } };
    }
    const fields = encodeAuditFrame(full, this.options.auditKey);
    if (this.options.chain !== false) this.zones.set(event.zone_id, { seq: full.chain!.seq, prev: fields.sig ?? "" });
    this.buffer.push(fields);
    this.accepted += 1;
    this.metrics.bufferDepth?.(this.depth);
    if (this.buffer.length >= this.maxBatchSize) this.requestFlush();
    else this.armTimer();
  }

  private armTimer(): void {
    if (this.timer !== undefined || this.flushQueued) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.due = true;
      this.requestFlush();
    }, this.flushIntervalMs);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private requestFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    this.clearTimer();
    void this.runOnLane(() => this.flushJob());
  }

  private runOnLane(job: () => Promise<void>): Promise<void> {
    const run = this.lane.then(job);
    // The lane never rejects: a job's failure is logged and must not stop the jobs queued after it.
    this.lane = run.catch((error: unknown) => {
      this.options.logger?.error({ err: error }, "audit publisher: internal error");
    });
    return run;
  }

  private async flushJob(): Promise<void> {
    this.flushQueued = false;
    let due = this.due;
    this.due = false;
    while (this.buffer.length > 0) {
      const urgent = this.flushWaiters.length > 0 || this.stateValue !== "running";
      if (this.buffer.length < this.maxBatchSize && !urgent && !due) break;
      due = false;
      const batch = this.buffer.splice(0, this.maxBatchSize);
      this.inFlight += batch.length;
      await this.handleBatch(batch);
      this.inFlight -= batch.length;
      this.handled += batch.length;
      this.admitWaiters();
      this.resolveFlushWaiters();
      this.metrics.bufferDepth?.(this.depth);
    }
    if (this.buffer.length > 0) this.armTimer();
    this.armReplayTimer();
  }

  /**
   * While spilled files wait, replay is also tried without new traffic. The timer does not keep the
   * process alive: the files are durable and are replayed at the next start otherwise.
   */
  private armReplayTimer(): void {
    if (!this.degraded || this.replayTimer !== undefined || this.stateValue === "closed") return;
    this.replayTimer = setTimeout(() => {
      void this.runOnLane(async () => {
        this.replayTimer = undefined;
        if (this.degraded && this.stateValue !== "closed") await this.replayAll();
        this.armReplayTimer();
      });
    }, Math.max(this.nextReplayAt - Date.now(), this.replayIntervalMs));
    this.replayTimer.unref();
  }

  private admitWaiters(): void {
    while (this.spaceWaiters.length > 0 && this.depth < this.maxBufferedEvents) this.spaceWaiters.shift()!();
  }

  private resolveFlushWaiters(): void {
    for (let i = this.flushWaiters.length - 1; i >= 0; i--) {
      const waiter = this.flushWaiters[i]!;
      if (this.handled >= waiter.target) {
        this.flushWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  /** Sends a batch to Redis or, failing that, to disk; returns only once the batch is handled. */
  private async handleBatch(batch: Fields[]): Promise<void> {
    let pending = batch;
    for (;;) {
      if (this.degraded && Date.now() >= this.nextReplayAt) await this.replayAll();
      if (!this.degraded) {
        pending = await this.send(pending);
        if (pending.length === 0) return;
        this.nextReplayAt = Date.now() + this.replayIntervalMs;
      }
      if (this.replayDir === undefined) {
        await sleep(RETRY_BACKOFF_MS);
        continue;
      }
      try {
        const name = replayFileName(this.startedAtMs, process.pid, ++this.ordinal);
        const path = await writeReplayFile(this.replayDir, name, pending);
        this.ownFiles.add(path);
        this.metrics.spilled?.(pending.length);
        this.options.logger?.warn({ events: pending.length, file: path }, "audit publisher: batch written to the replay directory");
        return;
      } catch (error) {
        this.options.logger?.error({ err: error, events: pending.length }, "audit publisher: replay file write failed; retrying");
        await sleep(RETRY_BACKOFF_MS);
      }
    }
  }

  /** One pipelined XADD of the frames; returns the frames Redis did not take (all of them on error or timeout). */
  private async send(frames: Fields[], mode: "live" | "replay" = "live"): Promise<Fields[]> {
    const started = performance.now();
    const attempt = this.publisher.publishBatch(frames.map((fields) => ({ stream: STREAM, fields })));
    // A timed-out pipeline may still complete later (at-least-once); its rejection must not go unhandled.
    attempt.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    try {
      const outcomes = await Promise.race([
        attempt,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`XADD pipeline timed out after ${this.publishTimeoutMs} ms`)), this.publishTimeoutMs);
        }),
      ]);
      const failed = frames.filter((_, i) => outcomes[i]?.ok !== true);
      if (failed.length > 0) {
        const firstError = outcomes.find((o) => !o.ok);
        this.options.logger?.warn({ failed: failed.length, error: firstError && !firstError.ok ? errorMessage(firstError.error) : undefined }, "audit publisher: XADD refused");
      }
      if (mode === "live") this.metrics.published?.(frames.length - failed.length);
      return failed;
    } catch (error) {
      this.options.logger?.warn({ error: errorMessage(error), events: frames.length }, "audit publisher: Redis unavailable");
      return frames;
    } finally {
      clearTimeout(timer);
      this.metrics.batchSent?.(frames.length, (performance.now() - started) / 1000);
    }
  }

  /**
   * Replays every complete file of the replay directory in name order (oldest first). Stops at the first
   * file Redis refuses. A file that cannot be parsed is renamed `.invalid` (kept, never deleted).
   */
  private async replayAll(): Promise<boolean> {
    const dir = this.replayDir;
    if (dir === undefined) return true;
    for (const file of await listReplayFiles(dir)) {
      let frames: Fields[];
      try {
        frames = await readReplayFile(file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") continue; // another reader took it
        if (error instanceof ReplayFileFormatError) {
          const kept = await quarantineReplayFile(file);
          this.options.logger?.error({ err: error, file: kept }, "audit publisher: unreadable replay file set aside");
          continue;
        }
        throw error;
      }
      for (let i = 0; i < frames.length; i += this.maxBatchSize) {
        const failed = await this.send(frames.slice(i, i + this.maxBatchSize), "replay");
        if (failed.length > 0) {
          this.nextReplayAt = Date.now() + this.replayIntervalMs;
          return false;
        }
      }
      await removeReplayFile(file, dir);
      this.ownFiles.delete(file);
      this.metrics.replayed?.(frames.length);
      this.options.logger?.info({ events: frames.length, file }, "audit publisher: replay file re-published");
    }
    this.ownFiles.clear();
    this.backlog = false;
    return true;
  }
}
