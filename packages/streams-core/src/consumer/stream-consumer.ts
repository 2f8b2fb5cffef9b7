/**
 * The consumer engine (WIRE §4): a reader (consumer group, or fan-out) feeding a pipeline of processing
 * steps around the service's handler. The ack rules are in the header comment of `./types.ts`; reading is
 * in `group-reader.ts` and `fanout-reader.ts`, the steps in `steps/`, their composition in `pipeline.ts`.
 *
 * `steps` unset applies `defaultSteps`: outcome metrics, dead letters, `maxDeliveries`, strict `_sig`
 * check per CARACAL_MODE, the topic's zod schema. A service that needs other steps lists them itself.
 */
import type { Logger } from "pino";
import { pino } from "pino";

import { DeadLetterWriter } from "../dead-letter.js";
import { ConfigError } from "../errors.js";
import { closeClient, duplicateClient } from "../redis.js";
import type { RedisClient } from "../redis.js";
import { streamKey } from "../registry.js";
import { FanoutReader } from "./fanout-reader.js";
import { GroupReader } from "./group-reader.js";
import type { PipelineContext, Processor, Step } from "./pipeline.js";
import { compose, handlerProcessor } from "./pipeline.js";
import { ConsumerRuntime } from "./runtime.js";
import { defaultSteps } from "./steps/index.js";
import type { ConsumerOptions, ConsumerState, HandlerContext } from "./types.js";

/** Default of `maxInFlightBytes`. */
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;

/** Options resolved once into their required form. */
interface Resolved {
  readonly key: string;
  readonly keyPrefix: string;
  readonly delivery: "group" | "fanout";
  readonly startId: string;
  readonly batchSize: number;
  readonly blockMs: number;
  readonly claimIdleMs: number;
  readonly claimIntervalMs: number;
  readonly concurrency: number;
  readonly graceMs: number;
  readonly statsIntervalMs: number;
  readonly retryBackoffMs: number;
  readonly fanoutDeadLetterOnceTtlMs: number;
  readonly maxInFlightBytes: number;
  readonly steps: readonly Step[];
  readonly logger: Logger;
}

function resolveOptions<T>(o: ConsumerOptions<T>): Resolved {
  const problems: string[] = [];
  if ((o.handleMessage === undefined) === (o.handleBatch === undefined)) problems.push("exactly one of handleMessage / handleBatch is required");
  const positive = (name: string, value: number | undefined, fallback: number, min = 1): number => {
    const v = value ?? fallback;
    if (!Number.isFinite(v) || v < min) problems.push(`${name} must be a number >= ${min}, got ${String(value)}`);
    return v;
  };
  const claimIdleMs = positive("claimIdleMs", o.claimIdleMs, 30_000);
  const maxDeliveries = positive("maxDeliveries", o.maxDeliveries, 5);
  if (o.steps !== undefined && o.maxDeliveries !== undefined) problems.push("maxDeliveries applies to the default steps only: with `steps`, use limitDeliveries(n)");
  const resolved: Resolved = {
    key: streamKey(o.topic.stream, o.keyPrefix ?? ""),
    keyPrefix: o.keyPrefix ?? "",
    delivery: o.delivery ?? "group",
    startId: o.startId ?? "$",
    batchSize: positive("batchSize", o.batchSize, 100),
    blockMs: positive("blockMs", o.blockMs, 2_000),
    claimIdleMs,
    claimIntervalMs: positive("claimIntervalMs", o.claimIntervalMs, claimIdleMs),
    concurrency: positive("concurrency", o.concurrency, 1),
    graceMs: positive("graceMs", o.graceMs, 10_000, 0),
    statsIntervalMs: positive("statsIntervalMs", o.statsIntervalMs, 5_000),
    retryBackoffMs: positive("retryBackoffMs", o.retryBackoffMs, 100),
    fanoutDeadLetterOnceTtlMs: positive("fanoutDeadLetterOnceTtlMs", o.fanoutDeadLetterOnceTtlMs, 86_400_000),
    maxInFlightBytes: positive("maxInFlightBytes", o.maxInFlightBytes, DEFAULT_MAX_IN_FLIGHT_BYTES),
    steps: o.steps ?? (problems.length === 0 ? defaultSteps({ signing: o.signing, maxDeliveries }) : []),
    logger: (o.logger ?? pino({ level: "silent" })).child({ stream: o.topic.stream, group: o.group, consumer: o.consumer }),
  };
  if (o.group === "") problems.push("group must not be empty");
  if (o.consumer === "") problems.push("consumer must not be empty");
  if (problems.length > 0) throw new ConfigError(problems.map((p) => `consumer ${o.topic.stream}: ${p}`));
  return resolved;
}

/**
 * Consumes one topic with one handler. `run(signal)` resolves once the consumer has stopped (after the
 * signal, or `close()`); `state`, `lastError`, `lastContactAt` and `lag` are for readiness and freshness.
 * The command connection passed in `options.redis` belongs to the caller and is never closed here; the
 * blocking-read connection is.
 */
export class StreamConsumer<T> {
  private readonly options: ConsumerOptions<T>;
  private readonly o: Resolved;
  private readonly rt: ConsumerRuntime;
  private readonly processor: Processor;
  private readonly context: PipelineContext;
  /** Aborted when the grace time is over: handlers must give up. */
  private readonly handlerController = new AbortController();
  private reader: GroupReader | FanoutReader | undefined;
  private blocking: RedisClient | undefined;
  private runPromise: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;

  state: ConsumerState = "idle";

  constructor(options: ConsumerOptions<T>) {
    this.options = options;
    this.o = resolveOptions(options);
    const metrics = options.metrics ?? {};
    this.rt = new ConsumerRuntime(this.o.logger, metrics, this.o.retryBackoffMs, this.o.maxInFlightBytes);
    this.processor = compose(this.o.steps, handlerProcessor(options, this.o.concurrency));
    const handler: HandlerContext = { signal: this.handlerController.signal, logger: this.o.logger, group: options.group, consumer: options.consumer };
    this.context = {
      handler,
      topic: options.topic,
      group: options.group,
      consumer: options.consumer,
      delivery: this.o.delivery,
      redis: options.redis,
      keyPrefix: this.o.keyPrefix,
      deadLetters: new DeadLetterWriter({ redis: options.redis, signing: options.signing, keyPrefix: this.o.keyPrefix }),
      deadLetterOnceTtlMs: this.o.fanoutDeadLetterOnceTtlMs,
      metrics,
      logger: this.o.logger,
      reportError: (error, what) => this.rt.recordError(error, what),
    };
  }

  /** The last Redis or processing error, cleared by the next successful read. */
  get lastError(): Error | undefined {
    return this.rt.lastError;
  }

  set lastError(error: Error | undefined) {
    this.rt.lastError = error;
  }

  /**
   * `Date.now()` of the last successful read reply from Redis (an empty reply after BLOCK counts); stops
   * advancing while Redis is unreachable. Undefined before the first read.
   */
  get lastContactAt(): number | undefined {
    return this.rt.lastContactAt;
  }

  /**
   * Entries behind this consumer, sampled every `statsIntervalMs`: XINFO GROUPS `lag` for a group; for
   * fan-out, entries added after the last id read (see `fanout-reader.ts`). Undefined until sampled.
   */
  get lag(): number | undefined {
    return this.rt.lag;
  }

  /** Field bytes of entries read and not yet settled (bounded by `maxInFlightBytes`, see its doc). */
  get inFlightBytes(): number {
    return this.rt.inFlightBytes;
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
    return `${this.options.consumer.replace(/[^\w.:-]/g, "_")}:read`;
  }

  private requestStop(): void {
    if (this.rt.stopping) return;
    if (this.state !== "idle" && this.state !== "stopped" && this.state !== "failed") this.state = "stopping";
    this.rt.stop();
    if (this.reader instanceof GroupReader) this.reader.wake();
    // A blocking read must not delay the stop: dropping its connection rejects it at once.
    this.blocking?.disconnect();
  }

  private async runToEnd(): Promise<void> {
    this.state = "starting";
    const o = this.options;
    let deadLetterSampling: Promise<void> = Promise.resolve();
    try {
      this.blocking = duplicateClient(o.redis, { blocking: true, connectionName: this.readConnectionName() });
      // Connection errors reach the reader as failed reads (recorded as `lastError`, logged with backoff);
      // without a listener ioredis would print each reconnect attempt as an unhandled error event.
      this.blocking.on("error", () => undefined);
      if (this.rt.stopping) return;
      deadLetterSampling = this.sampleDeadLetters();
      const common = {
        redis: o.redis,
        blocking: this.blocking,
        key: this.o.key,
        stream: o.topic.stream,
        startId: this.o.startId,
        batchSize: this.o.batchSize,
        blockMs: this.o.blockMs,
        statsIntervalMs: this.o.statsIntervalMs,
        logger: this.o.logger,
      };
      if (this.o.delivery === "group") {
        const reader = new GroupReader(
          {
            ...common,
            group: o.group,
            consumer: o.consumer,
            claimIdleMs: this.o.claimIdleMs,
            claimIntervalMs: this.o.claimIntervalMs,
            // One batch is read ahead while the previous one is handled; a batch handler keeps `concurrency`.
            maxBatchesInFlight: o.handleBatch !== undefined ? this.o.concurrency + 1 : 2,
          },
          this.rt,
          this.processor,
          this.context,
          (state) => {
            if (!this.rt.stopping) this.state = state;
          },
        );
        this.reader = reader;
        await reader.run();
      } else {
        const reader = new FanoutReader(common, this.rt, this.processor, this.context, () => {
          if (!this.rt.stopping) this.state = "running";
        });
        this.reader = reader;
        await reader.run();
      }
    } catch (error) {
      this.state = "failed";
      this.rt.lastError = error instanceof Error ? error : new Error(String(error));
      this.o.logger.error({ err: error }, "consumer failed");
      throw error;
    } finally {
      if (this.state !== "failed") this.state = "stopping";
      await this.finishInFlight();
      await deadLetterSampling;
      await this.closeBlocking();
      if (this.state !== "failed") this.state = "stopped";
    }
  }

  /**
   * Samples the topic's dead-letter stream every `statsIntervalMs` for the `deadLetterStream` hook
   * (length, letters dropped by MAXLEN trimming before any group read them, oldest age), when set.
   */
  private sampleDeadLetters(): Promise<void> {
    const hook = this.context.metrics.deadLetterStream;
    const dlq = this.options.topic.deadLetterStream;
    if (hook === undefined || dlq === undefined) return Promise.resolve();
    return this.rt.every(this.o.statsIntervalMs, async () => hook(await this.context.deadLetters.sample(dlq)));
  }

  /** Waits for in-flight batches (handlers, then ack) up to `graceMs`, then aborts the handlers' signal. */
  private async finishInFlight(): Promise<void> {
    const all = Promise.allSettled(this.reader?.inFlight ?? []);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), this.o.graceMs);
    });
    const outcome = await Promise.race([all, expired]);
    clearTimeout(timer);
    if (outcome === "expired") {
      const inFlight = this.reader instanceof GroupReader ? this.reader.inFlightCount : undefined;
      this.o.logger.warn({ inFlight }, "grace time over: unfinished entries stay pending");
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
}
