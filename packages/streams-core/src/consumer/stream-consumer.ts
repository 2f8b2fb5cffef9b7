/**
 * The consumer engine (WIRE §4): consumer groups with pending drain, XAUTOCLAIM reclaim, dead letters,
 * bounded concurrency, graceful stop; and a fan-out mode for per-replica caches. The ack rules are in the
 * header comment of `./types.ts`.
 *
 * Concurrency model: one reader loop (blocking reads on a dedicated connection), one reclaim loop and one
 * stats loop, all on the event loop. Batches are processed as they are read, up to `maxBatchesInFlight`
 * at once (one batch is read ahead while the previous one is handled); handler calls across all batches
 * are bounded by a FIFO semaphore of `concurrency` permits. Entries are acknowledged once per batch.
 */
import type { Logger } from "pino";
import { pino } from "pino";

import type { Fields } from "../codec.js";
import { decodeFieldList } from "../codec.js";
import type { DeadLetter } from "../dead-letter.js";
import { DeadLetterWriter } from "../dead-letter.js";
import type { DeadLetterReason } from "../errors.js";
import { ConfigError, RejectedMessageError, errorMessage, isPermanent } from "../errors.js";
import { closeClient, duplicateClient, isCluster } from "../redis.js";
import type { RedisClient } from "../redis.js";
import { streamKey } from "../registry.js";
import type { Topic } from "../registry.js";
import { formatIssues, topicSchemas } from "../schemas.js";
import { rejectsUnsigned } from "../signing.js";
import type { SignaturePolicy } from "../signing.js";
import { Semaphore } from "./semaphore.js";
import type {
  BatchHandler,
  ConsumerMetricsHooks,
  ConsumerOptions,
  ConsumerState,
  HandlerContext,
  MessageHandler,
  StreamMessage,
} from "./types.js";

/** An entry as read: `fields` undefined means its payload was trimmed while pending. */
interface RawEntry {
  readonly id: string;
  readonly fields: Fields | undefined;
  readonly deliveries: number;
}

interface PendingLetter {
  readonly entry: RawEntry;
  readonly fields: Fields;
  readonly reason: DeadLetterReason;
  readonly error: string;
}

type Decision = { kind: "ack" } | { kind: "retry"; error: unknown } | { kind: "dead-letter"; reason: DeadLetterReason; error: string };

const MAX_BACKOFF_MS = 5_000;
/** NOGROUP, or (Redis 7) a blocked read released because its stream key was deleted. */
const GROUP_GONE = /NOGROUP|no longer exists/;
const NO_METRICS: ConsumerMetricsHooks = {};

/** Options resolved once into their required form. */
interface Resolved<T> {
  readonly redis: RedisClient;
  readonly topic: Topic;
  readonly group: string;
  readonly consumer: string;
  readonly signing: SignaturePolicy;
  readonly signatureOptional: boolean;
  readonly handleMessage: MessageHandler<T> | undefined;
  readonly handleBatch: BatchHandler<T> | undefined;
  readonly parse: (fields: Fields) => T;
  readonly keyPrefix: string;
  readonly key: string;
  readonly delivery: "group" | "fanout";
  readonly startId: string;
  readonly batchSize: number;
  readonly blockMs: number;
  readonly claimIdleMs: number;
  readonly claimIntervalMs: number;
  readonly maxDeliveries: number;
  readonly concurrency: number;
  readonly graceMs: number;
  readonly statsIntervalMs: number;
  readonly retryBackoffMs: number;
  readonly fanoutDeadLetterOnceTtlMs: number;
  readonly metrics: ConsumerMetricsHooks;
  readonly logger: Logger;
}

function resolveOptions<T>(o: ConsumerOptions<T>): Resolved<T> {
  const problems: string[] = [];
  if ((o.handleMessage === undefined) === (o.handleBatch === undefined)) problems.push("exactly one of handleMessage / handleBatch is required");
  const positive = (name: string, value: number | undefined, fallback: number, min = 1): number => {
    const v = value ?? fallback;
    if (!Number.isFinite(v) || v < min) problems.push(`${name} must be a number >= ${min}, got ${String(value)}`);
    return v;
  };
  const batchSize = positive("batchSize", o.batchSize, 100);
  const blockMs = positive("blockMs", o.blockMs, 2_000);
  const claimIdleMs = positive("claimIdleMs", o.claimIdleMs, 30_000);
  const resolved: Resolved<T> = {
    redis: o.redis,
    topic: o.topic,
    group: o.group,
    consumer: o.consumer,
    signing: o.signing,
    signatureOptional: o.signatureOptional ?? false,
    handleMessage: o.handleMessage,
    handleBatch: o.handleBatch,
    parse: o.parse ?? schemaParser<T>(o.topic),
    keyPrefix: o.keyPrefix ?? "",
    key: streamKey(o.topic.stream, o.keyPrefix ?? ""),
    delivery: o.delivery ?? "group",
    startId: o.startId ?? "$",
    batchSize,
    blockMs,
    claimIdleMs,
    claimIntervalMs: positive("claimIntervalMs", o.claimIntervalMs, claimIdleMs),
    maxDeliveries: positive("maxDeliveries", o.maxDeliveries, 5),
    concurrency: positive("concurrency", o.concurrency, 1),
    graceMs: positive("graceMs", o.graceMs, 10_000, 0),
    statsIntervalMs: positive("statsIntervalMs", o.statsIntervalMs, 5_000),
    retryBackoffMs: positive("retryBackoffMs", o.retryBackoffMs, 100),
    fanoutDeadLetterOnceTtlMs: positive("fanoutDeadLetterOnceTtlMs", o.fanoutDeadLetterOnceTtlMs, 86_400_000),
    metrics: o.metrics ?? NO_METRICS,
    logger: (o.logger ?? pino({ level: "silent" })).child({ stream: o.topic.stream, group: o.group, consumer: o.consumer }),
  };
  if (o.group === "") problems.push("group must not be empty");
  if (o.consumer === "") problems.push("consumer must not be empty");
  if (problems.length > 0) throw new ConfigError(problems.map((p) => `consumer ${o.topic.stream}: ${p}`));
  return resolved;
}

/** The topic's zod schema as a parser; an invalid entry is a `schema_invalid` rejection. */
function schemaParser<T>(topic: Topic): (fields: Fields) => T {
  const schema = topicSchemas[topic.name];
  return (fields) => {
    const result = schema.safeParse(fields);
    if (!result.success) throw new RejectedMessageError("schema_invalid", formatIssues(result.error));
    return result.data as T;
  };
}

/** `[[key, [[id, [f, v, ...] | null], ...]]]` of XREAD / XREADGROUP, for one stream. */
type ReadReply = Array<[string, Array<[string, string[] | null]>]> | null;

function entriesOf(reply: ReadReply): Array<[string, string[] | null]> {
  if (reply === null || reply.length === 0) return [];
  return reply[0]?.[1] ?? [];
}

export function createConsumer<T>(options: ConsumerOptions<T>): StreamConsumer<T> {
  return new StreamConsumer(options);
}

/**
 * Consumes one topic with one handler. `run(signal)` resolves once the consumer has stopped (after the
 * signal, or `close()`); `state` and `lastError` are for readiness probes. The command connection passed
 * in `options.redis` belongs to the caller and is never closed here; the blocking-read connection is.
 */
export class StreamConsumer<T> {
  /**
   * Date.now() of the last successful read reply from Redis in the fan-out loop (an empty reply after
   * BLOCK counts as contact); undefined before the first. Freshness of a fan-out cache is judged by it.
   */
  lastContactAt: number | undefined = undefined;
  private readonly o: Resolved<T>;
  private readonly deadLetters: DeadLetterWriter;
  private readonly handlerSlots: Semaphore;
  private readonly maxBatchesInFlight: number;
  /** Aborted at stop: loops stop reading and sleeping. */
  private readonly stopController = new AbortController();
  /** Aborted when the grace time is over: handlers must give up. */
  private readonly handlerController = new AbortController();
  private readonly context: HandlerContext;
  private readonly inFlightBatches = new Set<Promise<void>>();
  /** Ids being processed here; the reclaim loop leaves them alone. */
  private readonly inFlightIds = new Set<string>();
  private batchDone: (() => void) | undefined;
  private blocking: RedisClient | undefined;
  private runPromise: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;
  private backoffAttempt = 0;

  state: ConsumerState = "idle";
  /** The last Redis or processing error, cleared by the next successful read. */
  lastError: Error | undefined;

  constructor(options: ConsumerOptions<T>) {
    this.o = resolveOptions(options);
    this.deadLetters = new DeadLetterWriter({ redis: this.o.redis, signing: this.o.signing, keyPrefix: this.o.keyPrefix });
    this.handlerSlots = new Semaphore(this.o.concurrency);
    this.maxBatchesInFlight = this.o.handleBatch !== undefined ? this.o.concurrency + 1 : 2;
    this.context = { signal: this.handlerController.signal, logger: this.o.logger, group: this.o.group, consumer: this.o.consumer };
  }

  /** Runs until `signal` aborts or `close()` is called; resolves when stopped. Call once. */
  run(signal: AbortSignal): Promise<void> {
    if (this.runPromise !== undefined) throw new Error("StreamConsumer.run may be called once");
    if (signal.aborted) this.requestStop();
    else signal.addEventListener("abort", () => this.requestStop(), { once: true });
    this.runPromise = this.runToEnd();
    return this.runPromise;
  }

  /** Stops and waits for the stop to complete. Idempotent; logs cleanup errors instead of throwing. */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.requestStop();
      try {
        await this.runPromise;
      } catch (error) {
        this.o.logger.error({ err: error }, "consumer stopped with an error");
      }
      await this.closeBlocking();
      if (this.state !== "failed") this.state = "stopped";
    })();
    return this.closePromise;
  }

  /** CLIENT SETNAME refuses spaces and newlines; consumer names come from hostnames and may hold anything. */
  private readConnectionName(): string {
    return `${this.o.consumer.replace(/[^\w.:-]/g, "_")}:read`;
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  private requestStop(): void {
    if (this.stopping) return;
    if (this.state !== "idle" && this.state !== "stopped" && this.state !== "failed") this.state = "stopping";
    this.stopController.abort();
    // A blocking read must not delay the stop: dropping its connection rejects it at once.
    this.blocking?.disconnect();
  }

  private async runToEnd(): Promise<void> {
    this.state = "starting";
    const loops: Promise<void>[] = [];
    try {
      if (this.o.delivery === "group") {
        await this.retrying(() => this.ensureGroup());
        if (!this.stopping) {
          this.blocking = duplicateClient(this.o.redis, { blocking: true, connectionName: this.readConnectionName() });
          loops.push(this.every(this.o.statsIntervalMs, () => this.sampleStats()));
          this.state = "draining-pending";
          await this.retrying(() => this.drainPending());
          // Reclaim starts after the drain, so that it cannot claim (and count again) entries the drain re-reads.
          if (!this.stopping) loops.push(this.every(this.o.claimIntervalMs, () => this.reclaim()));
          if (!this.stopping) this.state = "running";
          await this.readGroupLoop();
        }
      } else {
        this.blocking = duplicateClient(this.o.redis, { blocking: true, connectionName: this.readConnectionName() });
        this.state = "running";
        await this.fanoutLoop();
      }
    } catch (error) {
      this.state = "failed";
      this.lastError = error instanceof Error ? error : new Error(String(error));
      this.o.logger.error({ err: error }, "consumer failed");
      throw error;
    } finally {
      if (this.state !== "failed") this.state = "stopping";
      await this.finishInFlight(loops);
      await this.closeBlocking();
      if (this.state !== "failed") this.state = "stopped";
    }
  }

  /** Waits for in-flight batches (handlers, then ack) up to `graceMs`, then aborts the handlers' signal. */
  private async finishInFlight(loops: Promise<void>[]): Promise<void> {
    const all = Promise.allSettled([...this.inFlightBatches, ...loops]);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), this.o.graceMs);
    });
    const outcome = await Promise.race([all, expired]);
    clearTimeout(timer);
    if (outcome === "expired") {
      this.o.logger.warn({ inFlight: this.inFlightIds.size }, "grace time over: unfinished entries stay pending");
      this.handlerController.abort();
    }
  }

  private async closeBlocking(): Promise<void> {
    const blocking = this.blocking;
    if (blocking === undefined) return;
    this.blocking = undefined;
    try {
      if (blocking.status === "end") return;
      await closeClient(blocking);
    } catch (error) {
      this.o.logger.warn({ err: error }, "closing the read connection failed");
    }
  }

  // ---- group mode -------------------------------------------------------------------------------

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
    while (!this.stopping) {
      const reply = (await this.o.redis.xreadgroup(
        "GROUP",
        this.o.group,
        this.o.consumer,
        "COUNT",
        this.o.batchSize,
        "STREAMS",
        this.o.key,
        cursor,
      )) as ReadReply;
      const raw = entriesOf(reply);
      if (raw.length === 0) return;
      const counts = await this.deliveryCounts(raw[0]![0], raw[raw.length - 1]![0], raw.length);
      const entries = raw.map(([id, list]) => ({ id, fields: decodeFieldList(list), deliveries: counts.get(id) ?? 1 }));
      // Entries that fail again stay pending, so the cursor moves on instead of re-reading from 0.
      cursor = raw[raw.length - 1]![0];
      await this.processGroupBatch(entries);
    }
  }

  private async readGroupLoop(): Promise<void> {
    const blocking = this.blocking;
    if (blocking === undefined) return;
    while (!this.stopping) {
      await this.batchSlot();
      if (this.stopping) break;
      let reply: ReadReply;
      try {
        reply = (await blocking.xreadgroup(
          "GROUP",
          this.o.group,
          this.o.consumer,
          "COUNT",
          this.o.batchSize,
          "BLOCK",
          this.o.blockMs,
          "STREAMS",
          this.o.key,
          ">",
        )) as ReadReply;
      } catch (error) {
        if (this.stopping) break;
        await this.onLoopError(error, "read");
        // The stream (and with it the group) was deleted: recreate both, as at start.
        if (GROUP_GONE.test(errorMessage(error))) await this.ensureGroup().catch((e: unknown) => this.recordError(e, "group create"));
        continue;
      }
      this.onLoopSuccess();
      const raw = entriesOf(reply);
      if (raw.length === 0) continue;
      const entries: RawEntry[] = new Array(raw.length);
      for (let i = 0; i < raw.length; i++) {
        const [id, list] = raw[i]!;
        entries[i] = { id, fields: decodeFieldList(list), deliveries: 1 };
      }
      this.track(this.processGroupBatch(entries));
    }
  }

  /** Waits until fewer than `maxBatchesInFlight` batches are being processed (or the stop). */
  private async batchSlot(): Promise<void> {
    while (this.inFlightBatches.size >= this.maxBatchesInFlight && !this.stopping) {
      await new Promise<void>((resolve) => {
        this.batchDone = resolve;
      });
    }
  }

  private track(batch: Promise<void>): void {
    const tracked = batch
      .catch((error: unknown) => this.recordError(error, "batch"))
      .finally(() => {
        this.inFlightBatches.delete(tracked);
        const done = this.batchDone;
        this.batchDone = undefined;
        done?.();
      });
    this.inFlightBatches.add(tracked);
  }

  /** XAUTOCLAIM over the whole PEL (cursor loop); claimed entries are processed like any others. */
  private async reclaim(): Promise<void> {
    let cursor = "0-0";
    do {
      const reply = (await this.o.redis.xautoclaim(
        this.o.key,
        this.o.group,
        this.o.consumer,
        this.o.claimIdleMs,
        cursor,
        "COUNT",
        this.o.batchSize,
      )) as [string, Array<[string, string[] | null]>, string[]?];
      cursor = reply[0];
      const deleted = reply[2] ?? [];
      if (deleted.length > 0) {
        await this.o.redis.xack(this.o.key, this.o.group, ...deleted);
        this.o.metrics.trimmed?.(deleted.length);
        this.o.logger.warn({ count: deleted.length }, "pending entries were trimmed before ack: acknowledged");
      }
      // An entry this process is still handling is not processed twice here.
      const claimed = reply[1].filter(([id]) => !this.inFlightIds.has(id));
      if (claimed.length === 0) continue;
      this.o.metrics.reclaimed?.(claimed.length);
      const counts = await this.deliveryCountsOf(claimed.map(([id]) => id));
      const entries = claimed.map(([id, list]) => ({ id, fields: decodeFieldList(list), deliveries: counts.get(id) ?? 1 }));
      await this.processGroupBatch(entries);
    } while (cursor !== "0-0" && !this.stopping);
  }

  /** Delivery counts of this consumer's pending entries between two ids (XPENDING extended form). */
  private async deliveryCounts(first: string, last: string, count: number): Promise<Map<string, number>> {
    const rows = (await this.o.redis.xpending(this.o.key, this.o.group, first, last, count, this.o.consumer)) as Array<
      [string, string, number, number]
    >;
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

  private async sampleStats(): Promise<void> {
    if (this.o.metrics.lag === undefined && this.o.metrics.pending === undefined) return;
    const groups = (await this.o.redis.xinfo("GROUPS", this.o.key)) as unknown[][];
    for (const g of groups) {
      const info = new Map<string, unknown>();
      for (let i = 0; i + 1 < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
      if (info.get("name") !== this.o.group) continue;
      const lag = info.get("lag");
      if (typeof lag === "number") this.o.metrics.lag?.(lag);
      const pending = info.get("pending");
      if (typeof pending === "number") this.o.metrics.pending?.(pending);
    }
  }

  /** Verify, parse, handle, then dead-letter and acknowledge in one round trip (two with dead letters). */
  private async processGroupBatch(entries: readonly RawEntry[]): Promise<void> {
    this.o.metrics.received?.(entries.length);
    for (const e of entries) this.inFlightIds.add(e.id);
    try {
      const trimmed: string[] = [];
      const letters: PendingLetter[] = [];
      const messages = this.prepare(entries, trimmed, letters, true);
      const acks: string[] = [];
      if (messages.length > 0) {
        const errors = await this.handle(messages);
        for (const m of messages) {
          const decision = this.decide(errors.get(m.id), m.deliveries);
          if (decision.kind === "ack") acks.push(m.id);
          else if (decision.kind === "dead-letter") letters.push({
              entry: { id: m.id, fields: m.fields as Fields, deliveries: m.deliveries },
              fields: m.fields as Fields,
              reason: decision.reason,
              error: decision.error,
            });
          else this.o.logger.warn({ id: m.id, deliveries: m.deliveries, err: decision.error }, "handler failed: entry stays pending");
        }
      }
      await this.settle(acks, trimmed, letters);
    } finally {
      for (const e of entries) this.inFlightIds.delete(e.id);
    }
  }

  /**
   * Acks successes and trimmed entries, writes dead letters, then acks the entries whose dead letter was
   * written. A dead letter that failed to write is not acked: the entry stays pending and comes back.
   */
  private async settle(acks: string[], trimmed: string[], letters: PendingLetter[]): Promise<void> {
    const dlqStream = this.o.topic.deadLetterStream;
    const ackNow = acks.concat(trimmed);
    let discarded: PendingLetter[] = [];
    let toWrite: PendingLetter[] = letters;
    if (dlqStream === undefined && letters.length > 0) {
      discarded = letters;
      toWrite = [];
      for (const l of discarded) ackNow.push(l.entry.id);
    }
    let written: string[] = [];
    if (toWrite.length > 0 && dlqStream !== undefined) {
      const dead = toWrite.map((l) => this.letter(l));
      if (isCluster(this.o.redis)) {
        // The dead-letter key may live in another slot: its pipeline goes apart from the XACK.
        const [errors] = await Promise.all([this.deadLetters.write(dlqStream, dead), this.ack(ackNow)]);
        written = this.afterWrite(toWrite, errors);
      } else {
        const pipeline = this.o.redis.pipeline();
        for (const d of dead) this.deadLetters.append(pipeline, dlqStream, d);
        if (ackNow.length > 0) pipeline.xack(this.o.key, this.o.group, ...ackNow);
        const results = await pipeline.exec();
        if (results === null) throw new Error("settle pipeline was discarded");
        const ackResult = ackNow.length > 0 ? results[dead.length] : undefined;
        if (ackResult?.[0]) throw ackResult[0];
        written = this.afterWrite(
          toWrite,
          dead.map((_, i) => results[i]?.[0] ?? undefined),
        );
      }
      if (written.length > 0) await this.ack(written);
    } else {
      await this.ack(ackNow);
    }
    const writtenIds = new Set(written);
    this.count(acks.length, trimmed.length, toWrite.filter((l) => writtenIds.has(l.entry.id)), discarded);
  }

  private afterWrite(letters: readonly PendingLetter[], errors: readonly (Error | undefined)[]): string[] {
    const written: string[] = [];
    letters.forEach((l, i) => {
      const error = errors[i];
      if (error === undefined) written.push(l.entry.id);
      else {
        this.recordError(error, "dead-letter write");
        this.o.logger.error({ id: l.entry.id, reason: l.reason, err: error }, "dead-letter write failed: entry stays pending");
      }
    });
    return written;
  }

  private async ack(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.o.redis.xack(this.o.key, this.o.group, ...ids);
  }

  private count(acked: number, trimmed: number, written: readonly PendingLetter[], discarded: readonly PendingLetter[]): void {
    const m = this.o.metrics;
    if (acked > 0) m.acked?.(acked);
    if (trimmed > 0) {
      m.trimmed?.(trimmed);
      this.o.logger.warn({ count: trimmed }, "pending entries were trimmed before ack: acknowledged");
    }
    for (const [reason, n] of countByReason(written)) m.deadLettered?.(reason, n);
    for (const l of written) this.o.logger.warn({ id: l.entry.id, reason: l.reason, deliveries: l.entry.deliveries, error: l.error }, "entry dead-lettered");
    for (const [reason, n] of countByReason(discarded)) m.discarded?.(reason, n);
    for (const l of discarded) {
      this.o.logger.error({ id: l.entry.id, reason: l.reason, error: l.error }, "entry rejected on a stream with no dead letters: acknowledged and dropped");
    }
  }

  // ---- fan-out mode -----------------------------------------------------------------------------

  private async fanoutLoop(): Promise<void> {
    const blocking = this.blocking;
    if (blocking === undefined) return;
    let lastId = this.o.startId;
    if (lastId === "$") {
      // "$" is resolved once: re-sending "$" on every read would skip entries added between two reads.
      const resolved = await this.retrying(() => this.lastEntryId());
      if (resolved === undefined) return;
      lastId = resolved;
    }
    while (!this.stopping) {
      let reply: ReadReply;
      try {
        reply = (await blocking.xread("COUNT", this.o.batchSize, "BLOCK", this.o.blockMs, "STREAMS", this.o.key, lastId)) as ReadReply;
      } catch (error) {
        if (this.stopping) break;
        await this.onLoopError(error, "read");
        continue;
      }
      this.lastContactAt = Date.now();
      this.onLoopSuccess();
      const raw = entriesOf(reply);
      if (raw.length === 0) continue;
      const entries = raw.map(([id, list]) => ({ id, fields: decodeFieldList(list), deliveries: 1 }));
      // A batch whose dead letters cannot be written is retried: the cache must not skip an entry.
      const done = await this.retrying(() => this.processFanoutBatch(entries));
      if (done === undefined) break;
      lastId = raw[raw.length - 1]![0];
    }
  }

  private async lastEntryId(): Promise<string> {
    const last = (await this.o.redis.xrevrange(this.o.key, "+", "-", "COUNT", 1)) as Array<[string, string[]]>;
    return last[0]?.[0] ?? "0-0";
  }

  private async processFanoutBatch(entries: readonly RawEntry[]): Promise<true> {
    this.o.metrics.received?.(entries.length);
    const trimmed: string[] = [];
    const letters: PendingLetter[] = [];
    let messages = this.prepare(entries, trimmed, letters, false);
    let handled = 0;
    for (let attempt = 1; messages.length > 0; attempt++) {
      const errors = await this.handle(messages);
      const retry: StreamMessage<T>[] = [];
      for (const m of messages) {
        const decision = this.decide(errors.get(m.id), attempt);
        if (decision.kind === "ack") handled++;
        else if (decision.kind === "dead-letter") letters.push({ entry: { id: m.id, fields: m.fields as Fields, deliveries: attempt }, fields: m.fields as Fields, reason: decision.reason, error: decision.error });
        else retry.push({ ...m, deliveries: attempt + 1 });
      }
      messages = retry;
      if (retry.length > 0) {
        this.o.logger.warn({ count: retry.length, attempt }, "fan-out handler failed: retrying in process");
        if (!(await this.sleep(this.backoffMs(attempt)))) break;
      }
    }
    await this.deadLetterOnce(letters);
    if (handled > 0) this.o.metrics.acked?.(handled);
    return true;
  }

  /**
   * Every replica sees every entry, so a rejection is dead-lettered by whichever replica first sets the
   * `dlq-once` marker. If the write fails, the marker is removed and the error propagates (batch retried).
   */
  private async deadLetterOnce(letters: readonly PendingLetter[]): Promise<void> {
    const dlqStream = this.o.topic.deadLetterStream;
    if (letters.length === 0) return;
    if (dlqStream === undefined) {
      this.count(0, 0, [], letters);
      return;
    }
    const mine: PendingLetter[] = [];
    const markers: string[] = [];
    for (const l of letters) {
      const marker = `${this.o.keyPrefix}dlq-once:${this.o.topic.stream}:${l.entry.id}`;
      const set = await this.o.redis.set(marker, this.o.consumer, "PX", this.o.fanoutDeadLetterOnceTtlMs, "NX");
      if (set === "OK") {
        mine.push(l);
        markers.push(marker);
      }
    }
    if (mine.length === 0) return;
    const errors = await this.deadLetters.write(dlqStream, mine.map((l) => this.letter(l)));
    const failed = errors.findIndex((e) => e !== undefined);
    const written = mine.filter((_, i) => errors[i] === undefined);
    this.count(0, 0, written, []);
    if (failed >= 0) {
      await Promise.all(markers.filter((_, i) => errors[i] !== undefined).map((k) => this.o.redis.del(k)));
      throw errors[failed] as Error;
    }
  }

  // ---- shared per-entry work ----------------------------------------------------------------------

  /**
   * Sorts entries into trimmed ids, rejections and verified, parsed messages. In group mode an entry
   * already delivered more than `maxDeliveries` times (a consumer crashed on it) is dead-lettered without
   * calling the handler again.
   */
  private prepare(entries: readonly RawEntry[], trimmed: string[], letters: PendingLetter[], group: boolean): StreamMessage<T>[] {
    const messages: StreamMessage<T>[] = [];
    const signer = this.o.signing.signer;
    const strict = rejectsUnsigned(this.o.signing);
    const stream = this.o.topic.stream;
    let missing = 0;
    let invalid = 0;
    for (const entry of entries) {
      const fields = entry.fields;
      if (fields === undefined) {
        trimmed.push(entry.id);
        continue;
      }
      if (group && entry.deliveries > this.o.maxDeliveries) {
        letters.push({ entry, fields, reason: "max_deliveries_exceeded", error: `delivered ${entry.deliveries} times (max ${this.o.maxDeliveries})` });
        continue;
      }
      if (signer !== undefined) {
        const verdict = signer.verify(stream, fields);
        if (verdict !== "valid" && !(verdict === "missing" && this.o.signatureOptional)) {
          if (strict) {
            letters.push({
              entry,
              fields,
              reason: verdict === "missing" ? "signature_missing" : "signature_invalid",
              error: verdict === "missing" ? "entry has no _sig" : "_sig does not match the entry",
            });
            continue;
          }
          if (verdict === "missing") missing++;
          else invalid++;
        }
      }
      let body: T;
      try {
        body = this.o.parse(fields);
      } catch (error) {
        const reason = error instanceof RejectedMessageError ? error.reason : "parse_error";
        letters.push({ entry, fields, reason, error: errorMessage(error) });
        continue;
      }
      messages.push({ id: entry.id, stream, fields, body, deliveries: entry.deliveries });
    }
    if (missing > 0) this.o.metrics.unverified?.("missing", missing);
    if (invalid > 0) this.o.metrics.unverified?.("invalid", invalid);
    if (missing + invalid > 0) this.o.logger.warn({ missing, invalid }, "CARACAL_MODE=dev: handled entries with a missing or wrong _sig");
    return messages;
  }

  /** Calls the handler(s); returns the error of each failed message by id. */
  private async handle(messages: readonly StreamMessage<T>[]): Promise<Map<string, unknown>> {
    const errors = new Map<string, unknown>();
    const metrics = this.o.metrics;
    const handleBatch = this.o.handleBatch;
    if (handleBatch !== undefined) {
      await this.handlerSlots.run(async () => {
        const started = performance.now();
        try {
          const result = await handleBatch(messages, this.context);
          if (result?.failed !== undefined) for (const [id, error] of result.failed) errors.set(id, error);
        } catch (error) {
          for (const m of messages) errors.set(m.id, error);
        } finally {
          metrics.handlerDuration?.((performance.now() - started) / 1000);
        }
      });
      return errors;
    }
    const handleMessage = this.o.handleMessage as MessageHandler<T>;
    await Promise.all(
      messages.map((m) =>
        this.handlerSlots.run(async () => {
          const started = performance.now();
          try {
            await handleMessage(m, this.context);
          } catch (error) {
            errors.set(m.id, error ?? new Error("handler threw a nullish value"));
          } finally {
            metrics.handlerDuration?.((performance.now() - started) / 1000);
          }
        }),
      ),
    );
    return errors;
  }

  private decide(error: unknown, deliveries: number): Decision {
    if (error === undefined) return { kind: "ack" };
    if (error instanceof RejectedMessageError) return { kind: "dead-letter", reason: error.reason, error: errorMessage(error) };
    if (isPermanent(error)) return { kind: "dead-letter", reason: "permanent_error", error: errorMessage(error) };
    if (deliveries >= this.o.maxDeliveries) {
      return { kind: "dead-letter", reason: "max_deliveries_exceeded", error: errorMessage(error) };
    }
    return { kind: "retry", error };
  }

  private letter(l: PendingLetter): DeadLetter {
    return {
      reason: l.reason,
      srcStream: this.o.topic.stream,
      srcId: l.entry.id,
      group: this.o.group,
      consumer: this.o.consumer,
      deliveries: l.entry.deliveries,
      error: l.error,
      fields: l.fields,
    };
  }

  // ---- loops, errors, backoff -----------------------------------------------------------------------

  /** Runs `task` every `intervalMs` until stop; errors are recorded and the loop goes on. */
  private async every(intervalMs: number, task: () => Promise<void>): Promise<void> {
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
  private async retrying<R>(task: () => Promise<R>): Promise<R | undefined> {
    while (!this.stopping) {
      try {
        const result = await task();
        this.onLoopSuccess();
        return result;
      } catch (error) {
        if (this.stopping) return undefined;
        await this.onLoopError(error, "start-up");
      }
    }
    return undefined;
  }

  private async onLoopError(error: unknown, what: string): Promise<void> {
    this.recordError(error, what);
    this.backoffAttempt++;
    await this.sleep(this.backoffMs(this.backoffAttempt));
  }

  private onLoopSuccess(): void {
    if (this.backoffAttempt > 0 || this.lastError !== undefined) {
      this.backoffAttempt = 0;
      this.lastError = undefined;
    }
  }

  private recordError(error: unknown, what: string): void {
    this.lastError = error instanceof Error ? error : new Error(String(error));
    this.o.logger.error({ err: this.lastError }, `consumer ${what} failed`);
  }

  /** Exponential with full jitter in its upper half, capped at 5 s. */
  private backoffMs(attempt: number): number {
    const ceiling = Math.min(MAX_BACKOFF_MS, this.o.retryBackoffMs * 2 ** Math.min(attempt - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** Sleeps; resolves false at once when the consumer stops. */
  private sleep(ms: number): Promise<boolean> {
    const signal = this.stopController.signal;
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      }, ms);
      const onAbort = () => {
        clearTimeout(timer);
        resolve(false);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

function countByReason(letters: readonly PendingLetter[]): Map<DeadLetterReason, number> {
  const out = new Map<DeadLetterReason, number>();
  for (const l of letters) out.set(l.reason, (out.get(l.reason) ?? 0) + 1);
  return out;
}
