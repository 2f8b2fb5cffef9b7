/**
 * Consumer-group reading (WIRE §4): ensure the group, re-read this consumer's own pending entries
 * (`XREADGROUP ... 0`), then blocking `>` reads on a dedicated connection, XAUTOCLAIM of entries idle
 * longer than `claimIdleMs`, acknowledgement of trimmed entries, and XACK of what the pipeline settled.
 *
 * Concurrency: one read loop, one reclaim loop and one stats loop on the event loop. Batches are processed
 * as they are read, up to `maxBatchesInFlight` at once and while the bytes in flight stay under
 * `maxInFlightBytes`; entries are acknowledged once per batch.
 */
import type { Logger } from "pino";

import { errorMessage } from "../errors.js";
import type { RedisClient } from "../redis.js";
import type { Delivery, PipelineContext, Processor } from "./pipeline.js";
import { settles } from "./pipeline.js";
import type { ConsumerRuntime, RawEntry, ReadReply } from "./runtime.js";
import { entriesOf, rawEntry } from "./runtime.js";

/** NOGROUP, or (Redis 7) a blocked read released because its stream key was deleted. */
const GROUP_GONE = /NOGROUP|no longer exists/;

export interface GroupReaderOptions {
  readonly redis: RedisClient;
  /** The dedicated connection for blocking reads. */
  readonly blocking: RedisClient;
  readonly key: string;
  readonly stream: string;
  readonly group: string;
  readonly consumer: string;
  readonly startId: string;
  readonly batchSize: number;
  readonly blockMs: number;
  readonly claimIdleMs: number;
  readonly claimIntervalMs: number;
  readonly statsIntervalMs: number;
  readonly maxBatchesInFlight: number;
  readonly logger: Logger;
}

export class GroupReader {
  private readonly inFlightBatches = new Set<Promise<void>>();
  /** Ids being processed here; the reclaim loop leaves them alone. */
  private readonly inFlightIds = new Set<string>();
  private batchDone: (() => void) | undefined;
  readonly loops: Promise<void>[] = [];

  constructor(
    private readonly o: GroupReaderOptions,
    private readonly rt: ConsumerRuntime,
    private readonly process: Processor,
    private readonly context: PipelineContext,
    private readonly onState: (state: "draining-pending" | "running") => void,
  ) {}

  get inFlight(): readonly Promise<void>[] {
    return [...this.inFlightBatches, ...this.loops];
  }

  get inFlightCount(): number {
    return this.inFlightIds.size;
  }

  async run(): Promise<void> {
    await this.rt.retrying(() => this.ensureGroup());
    if (this.rt.stopping) return;
    this.loops.push(this.rt.every(this.o.statsIntervalMs, () => this.sampleStats()));
    this.onState("draining-pending");
    await this.rt.retrying(() => this.drainPending());
    // Reclaim starts after the drain, so that it cannot claim (and count again) entries the drain re-reads.
    if (!this.rt.stopping) this.loops.push(this.rt.every(this.o.claimIntervalMs, () => this.reclaim()));
    if (!this.rt.stopping) this.onState("running");
    await this.readLoop();
  }

  private async ensureGroup(): Promise<void> {
    try {
      await this.o.redis.xgroup("CREATE", this.o.key, this.o.group, this.o.startId, "MKSTREAM");
      this.o.logger.info({ startId: this.o.startId }, "consumer group created");
    } catch (error) {
      if (!/BUSYGROUP/.test(errorMessage(error))) throw error;
    }
  }

  /** Re-reads this consumer's own pending entries (`XREADGROUP ... 0`) until none is left past the cursor. */
  private async drainPending(): Promise<void> {
    let cursor = "0";
    while (!this.rt.stopping) {
      const reply = (await this.o.redis.xreadgroup(
        "GROUP",
        this.o.group,
        this.o.consumer,
        "COUNT",
        this.rt.readCount(this.o.batchSize),
        "STREAMS",
        this.o.key,
        cursor,
      )) as ReadReply;
      this.rt.contact();
      const raw = entriesOf(reply);
      if (raw.length === 0) return;
      const counts = await this.deliveryCounts(raw[0]![0], raw[raw.length - 1]![0], raw.length);
      const entries = raw.map(([id, list]) => rawEntry(id, list, counts.get(id) ?? 1));
      // Entries that fail again stay pending, so the cursor moves on instead of re-reading from 0.
      cursor = raw[raw.length - 1]![0];
      await this.processBatch(entries);
    }
  }

  private async readLoop(): Promise<void> {
    const blocking = this.o.blocking;
    while (!this.rt.stopping) {
      await this.batchSlot();
      await this.rt.admit();
      if (this.rt.stopping) break;
      let reply: ReadReply;
      try {
        reply = (await blocking.xreadgroup(
          "GROUP",
          this.o.group,
          this.o.consumer,
          "COUNT",
          this.rt.readCount(this.o.batchSize),
          "BLOCK",
          this.o.blockMs,
          "STREAMS",
          this.o.key,
          ">",
        )) as ReadReply;
      } catch (error) {
        if (this.rt.stopping) break;
        await this.rt.onLoopError(error, "read");
        // The stream (and with it the group) was deleted: recreate both, as at start.
        if (GROUP_GONE.test(errorMessage(error))) await this.ensureGroup().catch((e: unknown) => this.rt.recordError(e, "group create"));
        continue;
      }
      this.rt.contact();
      const raw = entriesOf(reply);
      if (raw.length === 0) continue;
      const entries: RawEntry[] = new Array(raw.length);
      for (let i = 0; i < raw.length; i++) {
        const [id, list] = raw[i]!;
        entries[i] = rawEntry(id, list, 1);
      }
      this.track(this.processBatch(entries));
    }
  }

  /** Waits until fewer than `maxBatchesInFlight` batches are being processed (or the stop). */
  private async batchSlot(): Promise<void> {
    while (this.inFlightBatches.size >= this.o.maxBatchesInFlight && !this.rt.stopping) {
      await new Promise<void>((resolve) => {
        this.batchDone = resolve;
      });
    }
  }

  /** Wakes a read loop waiting for a batch slot (at stop). */
  wake(): void {
    const done = this.batchDone;
    this.batchDone = undefined;
    done?.();
  }

  private track(batch: Promise<void>): void {
    const tracked = batch
      .catch((error: unknown) => this.rt.recordError(error, "batch"))
      .finally(() => {
        this.inFlightBatches.delete(tracked);
        this.wake();
      });
    this.inFlightBatches.add(tracked);
  }

  /** XAUTOCLAIM over the whole PEL (cursor loop); claimed entries are processed like any others. */
  private async reclaim(): Promise<void> {
    let cursor = "0-0";
    do {
      await this.rt.admit();
      if (this.rt.stopping) return;
      const reply = (await this.o.redis.xautoclaim(
        this.o.key,
        this.o.group,
        this.o.consumer,
        this.o.claimIdleMs,
        cursor,
        "COUNT",
        this.rt.readCount(this.o.batchSize),
      )) as [string, Array<[string, string[] | null]>, string[]?];
      cursor = reply[0];
      const deleted = reply[2] ?? [];
      if (deleted.length > 0) {
        await this.o.redis.xack(this.o.key, this.o.group, ...deleted);
        this.rt.metrics.trimmed?.(deleted.length);
        this.o.logger.warn({ count: deleted.length }, "pending entries were trimmed before ack: acknowledged");
      }
      // An entry this process is still handling is not processed twice here.
      const claimed = reply[1].filter(([id]) => !this.inFlightIds.has(id));
      if (claimed.length === 0) continue;
      this.rt.metrics.reclaimed?.(claimed.length);
      const counts = await this.deliveryCountsOf(claimed.map(([id]) => id));
      await this.processBatch(claimed.map(([id, list]) => rawEntry(id, list, counts.get(id) ?? 1)));
    } while (cursor !== "0-0" && !this.rt.stopping);
  }

  /** Delivery counts of this consumer's pending entries between two ids (XPENDING extended form). */
  private async deliveryCounts(first: string, last: string, count: number): Promise<Map<string, number>> {
    const rows = (await this.o.redis.xpending(this.o.key, this.o.group, first, last, count, this.o.consumer)) as Array<[string, string, number, number]>;
    const out = new Map<string, number>();
    for (const row of rows) out.set(row[0], Number(row[3]));
    return out;
  }

  /**
   * Exact delivery counts of claimed entries: one XPENDING per id, pipelined (a range query could be cut
   * short by this consumer's other pending entries between the claimed ids).
   */
  private async deliveryCountsOf(ids: readonly string[]): Promise<Map<string, number>> {
    const pipeline = this.o.redis.pipeline();
    for (const id of ids) pipeline.xpending(this.o.key, this.o.group, id, id, 1);
    const results = (await pipeline.exec()) ?? [];
    const out = new Map<string, number>();
    for (const [error, rows] of results) {
      if (error) throw error;
      const row = (rows as Array<[string, string, number, number]>)[0];
      if (row !== undefined) out.set(row[0], Number(row[3]));
    }
    return out;
  }

  /** XINFO GROUPS: the group's lag (entries not yet delivered to it) and pending count. */
  private async sampleStats(): Promise<void> {
    const groups = (await this.o.redis.xinfo("GROUPS", this.o.key)) as unknown[][];
    for (const g of groups) {
      const info = new Map<string, unknown>();
      for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
      if (info.get("name") !== this.o.group) continue;
      const lag = info.get("lag");
      if (typeof lag === "number") this.rt.setLag(lag);
      const pending = info.get("pending");
      if (typeof pending === "number") this.rt.metrics.pending?.(pending);
    }
  }

  /** Runs the pipeline over a batch, then acknowledges what it settled and the trimmed entries in one XACK. */
  private async processBatch(entries: readonly RawEntry[]): Promise<void> {
    const bytes = this.rt.take(entries);
    this.rt.metrics.received?.(entries.length);
    for (const e of entries) this.inFlightIds.add(e.id);
    try {
      const trimmed: string[] = [];
      const deliveries: Delivery[] = [];
      for (const e of entries) {
        if (e.fields === undefined) trimmed.push(e.id);
        else deliveries.push({ id: e.id, stream: this.o.stream, fields: e.fields, body: e.fields, deliveries: e.deliveries });
      }
      const outcomes = deliveries.length > 0 ? await this.process(deliveries, this.context) : new Map();
      const acks = trimmed.slice();
      for (const d of deliveries) {
        const outcome = outcomes.get(d.id);
        if (settles(outcome)) acks.push(d.id);
        else if (outcome?.kind === "retry") this.o.logger.warn({ id: d.id, deliveries: d.deliveries, err: outcome.error }, "handler failed: entry stays pending");
      }
      if (acks.length > 0) await this.o.redis.xack(this.o.key, this.o.group, ...acks);
      if (trimmed.length > 0) {
        this.rt.metrics.trimmed?.(trimmed.length);
        this.o.logger.warn({ count: trimmed.length }, "pending entries were trimmed before ack: acknowledged");
      }
    } finally {
      for (const e of entries) this.inFlightIds.delete(e.id);
      this.rt.release(bytes);
    }
  }
}
