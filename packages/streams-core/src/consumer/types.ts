/**
 * Contract of the consumer engine (WIRE §4). Apps supply a handler with domain logic only; the engine
 * owns reading, signature checks, parsing, ack, retry, reclaim, dead letters, metrics and shutdown. The
 * checks, parsing, retry bound, dead letters and metrics are composable steps (`steps`, see
 * `./pipeline.ts`); the rules below hold for every composition.
 *
 * Ack rules:
 * - an entry is acknowledged only after its handler succeeded, or after its dead letter was written;
 * - a handler error that is a `RejectedMessageError` dead-letters the entry with the error's reason;
 *   any other permanent `CaracalError` with `permanent_error`; anything else is transient: the entry
 *   stays pending and is retried until its delivery count reaches `maxDeliveries`, then dead-lettered
 *   with `max_deliveries_exceeded`;
 * - a failed dead-letter write means no ack (the entry stays pending and comes back).
 */
import type { Logger } from "pino";

import type { Fields } from "../codec.js";
import type { Step } from "./pipeline.js";
import type { Topic } from "../registry.js";
import type { RedisClient } from "../redis.js";
import type { SignaturePolicy } from "../signing.js";
import type { DeadLetterReason } from "../errors.js";
import type { DeadLetterStreamSample } from "../dead-letter.js";

export interface StreamMessage<T> {
  /** Stream entry id. */
  readonly id: string;
  /** Logical stream key (without key prefix). */
  readonly stream: string;
  /** Fields as received, `_sig` included. */
  readonly fields: Readonly<Fields>;
  /** The fields parsed by the parse step (the topic schema by default); the fields when no step parses. */
  readonly body: T;
  /** Delivery count from the pending entries list; 1 on first delivery. */
  readonly deliveries: number;
}

export interface HandlerContext {
  /**
   * Aborted when the consumer must stop now: `graceMs` after the stop signal, if the handler is still
   * running. Until then in-flight handlers are left to finish (and their entries are acknowledged).
   */
  readonly signal: AbortSignal;
  readonly logger: Logger;
  readonly group: string;
  readonly consumer: string;
}

export type MessageHandler<T> = (message: StreamMessage<T>, context: HandlerContext) => Promise<void>;

/**
 * Handles a whole batch. Entries whose id is not in the returned `failed` map are acknowledged.
 * Throwing fails the whole batch with that error.
 */
export type BatchHandler<T> = (
  messages: readonly StreamMessage<T>[],
  context: HandlerContext,
) => Promise<{ failed?: ReadonlyMap<string, unknown> } | void>;

export type ConsumerState = "idle" | "starting" | "draining-pending" | "running" | "stopping" | "stopped" | "failed";

/** Hooks the engine calls; `createPrometheusConsumerMetrics` implements them with prom-client. */
export interface ConsumerMetricsHooks {
  /**
   * The topic's dead-letter stream, sampled every `statsIntervalMs`: its length, letters added in all,
   * letters removed before any group read them (MAXLEN trimming of a flood; deleted by hand), and the age
   * of the oldest letter.
   */
  deadLetterStream?(sample: DeadLetterStreamSample): void;
  /**
   * Dead letters that could not be written (Redis away, the dead-letter key deleted mid-write or of the
   * wrong type): their entries stay pending and come back.
   */
  deadLetterWriteFailed?(count: number): void;
  /** Entries read: new, re-read pending and reclaimed (fan-out: every entry seen). */
  received?(count: number): void;
  /**
   * Entries whose handler succeeded, counted by the `countOutcomes` step as the pipeline settles them, just
   * before their XACK (dead-lettered and trimmed entries are counted apart).
   */
  acked?(count: number): void;
  deadLettered?(reason: DeadLetterReason, count: number): void;
  reclaimed?(count: number): void;
  /** Entries trimmed while pending (nil payloads, ids deleted under XAUTOCLAIM), acknowledged and counted. */
  trimmed?(count: number): void;
  handlerDuration?(seconds: number): void;
  /**
   * Entries behind this consumer: for a group, entries not yet delivered to it (XINFO GROUPS `lag`); for
   * fan-out, entries added after the last id read. Sampled every `statsIntervalMs`.
   */
  lag?(entries: number): void;
  /**
   * `Date.now()` of a successful read reply from Redis (an empty reply after BLOCK included), called on
   * each one; a Redis outage stops the calls. Fan-out caches fail closed on its age.
   */
  contact?(epochMs: number): void;
  /** Entries delivered to the group and not acknowledged. */
  pending?(entries: number): void;
  /** dev mode only: entries whose `_sig` was missing or wrong and that were handled anyway. */
  unverified?(result: "missing" | "invalid", count: number): void;
  /**
   * Entries that should have been dead-lettered but whose topic has no dead-letter stream (the dead-letter
   * streams themselves): acknowledged, logged at error level, and counted here.
   */
  discarded?(reason: DeadLetterReason, count: number): void;
}

export interface ConsumerOptions<T> {
  /** Connection for commands (ack, claim, dead letters). The blocking read uses its own duplicate. */
  redis: RedisClient;
  topic: Topic;
  /** A group from `topic.groups`. In fan-out mode, the group name only labels logs and dead letters. */
  group: string;
  /** Unique per replica (hostname, or hostname-pid). */
  consumer: string;
  /** Signs dead letters; checks `_sig` in the default steps. */
  signing: SignaturePolicy;
  /** Exactly one of `handleMessage` / `handleBatch`. */
  handleMessage?: MessageHandler<T>;
  handleBatch?: BatchHandler<T>;
  /**
   * The processing steps around the handler, outermost first (`./pipeline.ts`, `./steps/`). Default
   * `defaultSteps({ signing, maxDeliveries })`: count outcomes, dead-letter rejections, bound deliveries,
   * strict `_sig` check per CARACAL_MODE, the topic's zod schema. The handler's `T` is what the last parse
   * step yields (the raw `Fields` when no step parses).
   */
  steps?: readonly Step[];
  /** Prepended to every stream key (tests, tenants). Default "". */
  keyPrefix?: string;
  /** `group` (default): each entry to one replica. `fanout`: every replica sees every entry, no group state. */
  delivery?: "group" | "fanout";
  /** Where a new group (or a fan-out reader) starts: "$" (default, new entries) or "0" (whole stream). */
  startId?: string;
  /** Entries per XREADGROUP / XREAD. Default 100. */
  batchSize?: number;
  /** XREADGROUP BLOCK time. Default 2000 ms. */
  blockMs?: number;
  /** Pending entries idle longer than this are reclaimed with XAUTOCLAIM. Default 30,000 ms. */
  claimIdleMs?: number;
  /** How often XAUTOCLAIM runs. Default: claimIdleMs. */
  claimIntervalMs?: number;
  /**
   * Delivery count at which an entry that keeps failing is dead-lettered, for the default steps. Default 5.
   * With `steps`, bound deliveries with `limitDeliveries(n)` (passing both is a ConfigError).
   */
  maxDeliveries?: number;
  /**
   * Bound on the field bytes (names and values, UTF-8) of entries read and not yet settled, read-ahead
   * included. The reader waits while it is reached and sizes its reads (COUNT) to the room left by the
   * mean entry size; with nothing in flight it always reads, so one entry larger than the bound still
   * progresses. Default 64 MiB.
   */
  maxInFlightBytes?: number;
  /** Handler calls in flight at once (messages for handleMessage, batches for handleBatch). Default 1. */
  concurrency?: number;
  /** Time to finish in-flight work after the stop signal before connections are closed. Default 10,000 ms. */
  graceMs?: number;
  /** How often lag and pending are sampled for metrics. Default 5,000 ms. */
  statsIntervalMs?: number;
  metrics?: ConsumerMetricsHooks;
  logger?: Logger;
  /**
   * First delay of the exponential backoff (with jitter, capped at 5 s) after a Redis error, and between
   * in-process retries of a failed handler in fan-out mode. Default 100 ms.
   */
  retryBackoffMs?: number;
  /**
   * Fan-out mode: how long the `dlq-once` marker that lets one replica only dead-letter an entry lives.
   * Default 24 h.
   */
  fanoutDeadLetterOnceTtlMs?: number;
}
