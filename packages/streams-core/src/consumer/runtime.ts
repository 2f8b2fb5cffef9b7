/**
 * What both readers share: the stop signal, backoff after Redis errors, the last error and last contact
 * with Redis (for readiness and freshness), the byte budget of entries read and not yet settled, and the
 * decoding of read replies.
 */
import type { Logger } from "pino";

import type { Fields } from "../codec.js";
import { decodeFieldList } from "../codec.js";
import { backoffDelayMs, sleep } from "../timing.js";
import type { ConsumerMetricsHooks } from "./types.js";

const MAX_BACKOFF_MS = 5_000;
/** Entry size assumed before the first read (large audit frames are of this order). */
const ASSUMED_ENTRY_BYTES = 1024 * 1024;

/** An entry as read: `fields` undefined means its payload was trimmed while pending. */
export interface RawEntry {
  readonly id: string;
  readonly fields: Fields | undefined;
  readonly deliveries: number;
  /** Field bytes (names and values, UTF-8) counted against `maxInFlightBytes`. */
  readonly bytes: number;
}

/** `[[key, [[id, [f, v, ...] | null], ...]]]` of XREAD / XREADGROUP, for one stream. */
export type ReadReply = Array<[string, Array<[string, string[] | null]>]> | null;

export function entriesOf(reply: ReadReply): Array<[string, string[] | null]> {
  if (reply === null || reply.length === 0) return [];
  return reply[0]?.[1] ?? [];
}

export function rawEntry(id: string, list: string[] | null, deliveries: number): RawEntry {
  let bytes = 0;
  if (list !== null) for (const s of list) bytes += Buffer.byteLength(s);
  return { id, fields: decodeFieldList(list), deliveries, bytes };
}

export function bytesOf(entries: readonly RawEntry[]): number {
  let n = 0;
  for (const e of entries) n += e.bytes;
  return n;
}

export class ConsumerRuntime {
  /** Aborted at stop: loops stop reading and sleeping. */
  readonly stopController = new AbortController();
  lastError: Error | undefined;
  lastContactAt: number | undefined;
  lag: number | undefined;
  private backoffAttempt = 0;
  /** Field bytes of entries read and not yet settled. */
  inFlightBytes = 0;
  /** Running mean of entry bytes, to size reads to the budget. */
  private meanEntryBytes = 0;
  private budgetWaiters: Array<() => void> = [];

  constructor(
    readonly logger: Logger,
    readonly metrics: ConsumerMetricsHooks,
    private readonly retryBackoffMs: number,
    readonly maxInFlightBytes: number,
  ) {}

  /** Stops the loops; wakes a reader waiting for budget. */
  stop(): void {
    this.stopController.abort();
    this.release(0);
  }

  get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  get stopSignal(): AbortSignal {
    return this.stopController.signal;
  }

  /** A read reply came back (an empty one after BLOCK too): Redis is in contact. */
  contact(): void {
    const now = Date.now();
    this.lastContactAt = now;
    this.metrics.contact?.(now);
    if (this.backoffAttempt > 0 || this.lastError !== undefined) {
      this.backoffAttempt = 0;
      this.lastError = undefined;
    }
  }

  /** Clears the error state after a successful command that is not a read. */
  succeeded(): void {
    this.backoffAttempt = 0;
    this.lastError = undefined;
  }

  setLag(entries: number): void {
    this.lag = entries;
    this.metrics.lag?.(entries);
  }

  recordError(error: unknown, what: string): void {
    this.lastError = error instanceof Error ? error : new Error(String(error));
    this.logger.error({ err: this.lastError }, `consumer ${what} failed`);
  }

  async onLoopError(error: unknown, what: string): Promise<void> {
    this.recordError(error, what);
    this.backoffAttempt++;
    await this.sleep(this.backoffMs(this.backoffAttempt));
  }

  backoffMs(attempt: number): number {
    return backoffDelayMs(attempt, { baseMs: this.retryBackoffMs, capMs: MAX_BACKOFF_MS });
  }

  sleep(ms: number): Promise<boolean> {
    return sleep(ms, this.stopController.signal);
  }

  /** Runs `task` every `intervalMs` until stop; errors are recorded and the loop goes on. */
  async every(intervalMs: number, task: () => Promise<void>): Promise<void> {
    while (await this.sleep(intervalMs)) {
      try {
        await task();
      } catch (error) {
        if (this.stopping) return;
        this.recordError(error, "periodic task");
      }
    }
  }

  /** Retries `task` with backoff until it succeeds or the consumer stops (then undefined). */
  async retrying<R>(task: () => Promise<R>, what = "start-up"): Promise<R | undefined> {
    while (!this.stopping) {
      try {
        const result = await task();
        this.succeeded();
        return result;
      } catch (error) {
        if (this.stopping) return undefined;
        await this.onLoopError(error, what);
      }
    }
    return undefined;
  }

  // ---- byte budget ------------------------------------------------------------------------------

  /**
   * Waits while the bytes of entries read and not yet settled are at or over `maxInFlightBytes` and some
   * work is in flight; with nothing in flight it returns at once, so a single entry larger than the budget
   * still progresses.
   */
  async admit(): Promise<void> {
    while (this.inFlightBytes >= this.maxInFlightBytes && this.inFlightBytes > 0 && !this.stopping) {
      await new Promise<void>((resolve) => {
        this.budgetWaiters.push(resolve);
      });
    }
  }

  /**
   * The COUNT of the next read: `batchSize`, fewer when the budget left holds fewer entries of mean size.
   * Until an entry has been seen its size is unknown and taken as `ASSUMED_ENTRY_BYTES`, so that a first
   * read of `batchSize` large entries cannot overshoot the bound many times.
   */
  readCount(batchSize: number): number {
    if (this.meanEntryBytes <= 0) return Math.max(1, Math.min(batchSize, Math.floor(this.maxInFlightBytes / ASSUMED_ENTRY_BYTES)));
    const left = Math.max(0, this.maxInFlightBytes - this.inFlightBytes);
    return Math.max(1, Math.min(batchSize, Math.floor(left / this.meanEntryBytes)));
  }

  take(entries: readonly RawEntry[]): number {
    const bytes = bytesOf(entries);
    if (entries.length > 0) {
      const mean = bytes / entries.length;
      this.meanEntryBytes = this.meanEntryBytes === 0 ? mean : this.meanEntryBytes * 0.7 + mean * 0.3;
    }
    this.inFlightBytes += bytes;
    return bytes;
  }

  release(bytes: number): void {
    this.inFlightBytes -= bytes;
    const waiters = this.budgetWaiters;
    this.budgetWaiters = [];
    for (const w of waiters) w();
  }
}
