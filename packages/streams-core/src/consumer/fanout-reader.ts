/**
 * Fan-out reading: every replica reads every entry with XREAD from its own last id; there is no group
 * state and nothing to acknowledge. A failed entry is processed again in process after a backoff (its
 * delivery count is the attempt number) until it succeeds or the pipeline settles it; the reader never
 * moves past an entry the pipeline did not settle, so a per-replica cache skips nothing. Dead letters are
 * written once across replicas by the dead-letter step (`dlq-once` marker).
 *
 * Lag is sampled from XINFO STREAM: `entries-added` now, minus its value at the reader's position (taken
 * when "$" is resolved, then advanced by each entry read), capped at the stream's length. It is exact
 * while nothing ahead of the reader is deleted or trimmed, and never more than what the stream holds.
 */
import type { Logger } from "pino";

import type { RedisClient } from "../redis.js";
import type { Delivery, PipelineContext, Processor } from "./pipeline.js";
import { settles } from "./pipeline.js";
import type { ConsumerRuntime, RawEntry, ReadReply } from "./runtime.js";
import { entriesOf, rawEntry } from "./runtime.js";

export interface FanoutReaderOptions {
  readonly redis: RedisClient;
  readonly blocking: RedisClient;
  readonly key: string;
  readonly stream: string;
  readonly startId: string;
  readonly batchSize: number;
  readonly blockMs: number;
  readonly statsIntervalMs: number;
  readonly logger: Logger;
}

interface StreamInfo {
  readonly length: number;
  readonly lastId: string;
  /** Redis 7: every entry ever added; undefined on older servers. */
  readonly entriesAdded: number | undefined;
}

export class FanoutReader {
  readonly loops: Promise<void>[] = [];
  private lastId = "0-0";
  /** `entries-added` at `lastId`; undefined until known. */
  private position: number | undefined;

  constructor(
    private readonly o: FanoutReaderOptions,
    private readonly rt: ConsumerRuntime,
    private readonly process: Processor,
    private readonly context: PipelineContext,
    private readonly onRunning: () => void,
  ) {}

  get inFlight(): readonly Promise<void>[] {
    return this.loops;
  }

  async run(): Promise<void> {
    if (this.o.startId === "$") {
      // "$" is resolved once: re-sending "$" on every read would skip entries added between two reads.
      const info = await this.rt.retrying(() => this.streamInfo());
      if (info === undefined) return;
      this.lastId = info.lastId;
      this.position = info.entriesAdded;
    } else {
      this.lastId = this.o.startId === "0" ? "0-0" : this.o.startId;
      const info = await this.rt.retrying(() => this.streamInfo());
      if (info === undefined) return;
      // From "0": the entries before the first one still held were trimmed and will never be read.
      if (info.entriesAdded !== undefined && /^0(-0)?$/.test(this.lastId)) this.position = info.entriesAdded - info.length;
    }
    this.onRunning();
    this.loops.push(this.rt.every(this.o.statsIntervalMs, () => this.sampleLag()));
    await this.readLoop();
  }

  private async readLoop(): Promise<void> {
    while (!this.rt.stopping) {
      let reply: ReadReply;
      try {
        reply = (await this.o.blocking.xread("COUNT", this.rt.readCount(this.o.batchSize), "BLOCK", this.o.blockMs, "STREAMS", this.o.key, this.lastId)) as ReadReply;
      } catch (error) {
        if (this.rt.stopping) break;
        await this.rt.onLoopError(error, "read");
        continue;
      }
      this.rt.contact();
      const raw = entriesOf(reply);
      if (raw.length === 0) continue;
      const entries = raw.map(([id, list]) => rawEntry(id, list, 1));
      const done = await this.processBatch(entries);
      if (!done) break;
      this.lastId = raw[raw.length - 1]![0];
      if (this.position !== undefined) this.position += raw.length;
    }
  }

  /** Processes until every entry is settled; false when the consumer stopped first. */
  private async processBatch(entries: readonly RawEntry[]): Promise<boolean> {
    const bytes = this.rt.take(entries);
    try {
      this.rt.metrics.received?.(entries.length);
      let open: Delivery[] = [];
      for (const e of entries) {
        if (e.fields !== undefined) open.push({ id: e.id, stream: this.o.stream, fields: e.fields, body: e.fields, deliveries: 1 });
      }
      for (let round = 1; open.length > 0; round++) {
        let outcomes;
        try {
          outcomes = await this.process(open, this.context);
        } catch (error) {
          this.rt.recordError(error, "batch");
          if (!(await this.rt.sleep(this.rt.backoffMs(round)))) return false;
          continue;
        }
        const again: Delivery[] = [];
        let retries = 0;
        for (const d of open) {
          const outcome = outcomes.get(d.id);
          if (settles(outcome)) continue;
          if (outcome?.kind === "retry") {
            retries++;
            again.push({ ...d, deliveries: d.deliveries + 1 });
          } else again.push(d); // a dead letter that could not be written: try again
        }
        open = again;
        if (open.length > 0) {
          this.o.logger.warn({ count: open.length, retries, round }, "fan-out entries not settled: processing them again in process");
          if (!(await this.rt.sleep(this.rt.backoffMs(round)))) return false;
        }
      }
      return true;
    } finally {
      this.rt.release(bytes);
    }
  }

  private async streamInfo(): Promise<StreamInfo> {
    let reply: unknown[];
    try {
      reply = (await this.o.redis.xinfo("STREAM", this.o.key)) as unknown[];
    } catch (error) {
      // No stream yet: nothing to read, nothing added.
      if (/no such key/i.test(String((error as Error).message))) return { length: 0, lastId: "0-0", entriesAdded: 0 };
      throw error;
    }
    const info = new Map<string, unknown>();
    for (let i = 0; i + 1 < reply.length; i += 2) info.set(String(reply[i]), reply[i + 1]);
    const added = info.get("entries-added");
    return {
      length: Number(info.get("length") ?? 0),
      lastId: String(info.get("last-generated-id") ?? "0-0"),
      entriesAdded: typeof added === "number" ? added : undefined,
    };
  }

  private async sampleLag(): Promise<void> {
    const info = await this.streamInfo();
    if (info.entriesAdded === undefined) return;
    if (info.lastId === this.lastId) {
      // Caught up: re-anchor the position (it may have drifted when entries ahead were deleted).
      this.position = info.entriesAdded;
      this.rt.setLag(0);
      return;
    }
    if (this.position === undefined || this.position > info.entriesAdded) return;
    this.rt.setLag(Math.min(info.entriesAdded - this.position, info.length));
  }
}
