/**
 * The processing side of a consumer, separate from reading (`group-reader.ts`, `fanout-reader.ts`).
 *
 * A `Processor` takes a batch of deliveries and answers an `Outcome` for each entry that did not simply
 * succeed. A `Step` wraps a processor into another (`(next) => processor`, Watermill's middleware), so
 * signature checks, parsing, delivery limits, dead letters and metrics are composed where a service wires
 * its handler, outermost first. The readers apply the outcomes with the ack rules of `./types.ts`:
 * - no outcome, `dead-lettered` and `discarded`: acknowledged (fan-out: done);
 * - `retry`: stays pending (fan-out: handled again in process after a backoff);
 * - `reject`: wants a dead letter that was not written (no dead-letter step, or its write failed): stays
 *   pending (fan-out: processed again after a backoff), never acknowledged without its letter.
 *
 * Steps may be called concurrently (several batches in flight); they keep no per-batch state outside the
 * call. A step never throws for one entry's sake: it answers an outcome; a throw fails the whole batch
 * (every entry stays pending).
 */
import type { Logger } from "pino";

import type { DeadLetterWriter } from "../dead-letter.js";
import type { DeadLetterReason } from "../errors.js";
import { RejectedMessageError, errorMessage, isPermanent } from "../errors.js";
import type { RedisClient } from "../redis.js";
import type { Topic } from "../registry.js";
import { Semaphore } from "./semaphore.js";
import type { BatchHandler, ConsumerMetricsHooks, HandlerContext, MessageHandler, StreamMessage } from "./types.js";

/** An entry on its way through the steps; `body` is the fields until a parse step replaces it. */
export type Delivery = StreamMessage<unknown>;

export type Outcome =
  /** Transient failure: try again later (group: stays pending; fan-out: retried in process). */
  | { readonly kind: "retry"; readonly error: unknown }
  /** Must be dead-lettered; not acknowledged until its letter is written. */
  | { readonly kind: "reject"; readonly reason: DeadLetterReason; readonly error: string }
  /** Its dead letter was written (fan-out, `byOtherReplica`: another replica writes it): acknowledge. */
  | { readonly kind: "dead-lettered"; readonly reason: DeadLetterReason; readonly error: string; readonly byOtherReplica?: boolean }
  /** The topic has no dead-letter stream: acknowledged, logged and counted as discarded. */
  | { readonly kind: "discarded"; readonly reason: DeadLetterReason; readonly error: string };

/** Outcomes by entry id; an entry with no outcome succeeded. */
export type Outcomes = Map<string, Outcome>;

/** What the running consumer hands every step, besides the batch. */
export interface PipelineContext {
  readonly handler: HandlerContext;
  readonly topic: Topic;
  readonly group: string;
  readonly consumer: string;
  readonly delivery: "group" | "fanout";
  readonly redis: RedisClient;
  readonly keyPrefix: string;
  readonly deadLetters: DeadLetterWriter;
  /** Fan-out: lifetime of the `dlq-once` marker that lets one replica only write a dead letter. */
  readonly deadLetterOnceTtlMs: number;
  readonly metrics: ConsumerMetricsHooks;
  readonly logger: Logger;
  /** Records an error that keeps entries pending (readiness reads it as the consumer's `lastError`). */
  reportError(error: unknown, what: string): void;
}

export type Processor = (batch: readonly Delivery[], context: PipelineContext) => Promise<Outcomes>;

/** Middleware: wraps the next processor. Steps are listed outermost first. */
export type Step = (next: Processor) => Processor;

/** `compose([a, b, c], h)` is `a(b(c(h)))`: `a` sees the batch first and the outcomes last. */
export function compose(steps: readonly Step[], terminal: Processor): Processor {
  let processor = terminal;
  for (let i = steps.length - 1; i >= 0; i--) processor = steps[i]!(processor);
  return processor;
}

/**
 * The outcome of a handler error, by its type (WIRE §4): a `RejectedMessageError` is rejected with its
 * reason, any other permanent `CaracalError` as `permanent_error`, anything else is retried.
 */
export function outcomeOfError(error: unknown): Outcome {
  if (error instanceof RejectedMessageError) return { kind: "reject", reason: error.reason, error: errorMessage(error) };
  if (isPermanent(error)) return { kind: "reject", reason: "permanent_error", error: errorMessage(error) };
  return { kind: "retry", error };
}

/**
 * The innermost processor: calls the service's handler, at most `concurrency` calls at once across all
 * batches (messages for `handleMessage`, batches for `handleBatch`), and records each call's duration.
 */
export function handlerProcessor<T>(handler: { handleMessage?: MessageHandler<T> | undefined; handleBatch?: BatchHandler<T> | undefined }, concurrency: number): Processor {
  const slots = new Semaphore(concurrency);
  const { handleMessage, handleBatch } = handler;
  if (handleBatch !== undefined) {
    return async (batch, context) => {
      const outcomes: Outcomes = new Map();
      if (batch.length === 0) return outcomes;
      await slots.run(async () => {
        const started = performance.now();
        try {
          const result = await handleBatch(batch as readonly StreamMessage<T>[], context.handler);
          if (result?.failed !== undefined) for (const [id, error] of result.failed) outcomes.set(id, outcomeOfError(error));
        } catch (error) {
          const outcome = outcomeOfError(error);
          for (const m of batch) outcomes.set(m.id, outcome);
        } finally {
          context.metrics.handlerDuration?.((performance.now() - started) / 1000);
        }
      });
      return outcomes;
    };
  }
  if (handleMessage === undefined) throw new Error("handlerProcessor needs handleMessage or handleBatch");
  return async (batch, context) => {
    const outcomes: Outcomes = new Map();
    await Promise.all(
      batch.map((m) =>
        slots.run(async () => {
          const started = performance.now();
          try {
            await handleMessage(m as StreamMessage<T>, context.handler);
          } catch (error) {
            outcomes.set(m.id, outcomeOfError(error ?? new Error("handler threw a nullish value")));
          } finally {
            context.metrics.handlerDuration?.((performance.now() - started) / 1000);
          }
        }),
      ),
    );
    return outcomes;
  };
}

/**
 * Calls `next` with the deliveries that passed, and merges the outcomes of the ones a step settled itself.
 */
export async function passOn(next: Processor, passed: readonly Delivery[], settled: Outcomes, context: PipelineContext): Promise<Outcomes> {
  if (passed.length === 0) return settled;
  const outcomes = await next(passed, context);
  for (const [id, outcome] of settled) outcomes.set(id, outcome);
  return outcomes;
}

/** True when the outcome lets the entry be acknowledged. */
export function settles(outcome: Outcome | undefined): boolean {
  return outcome === undefined || outcome.kind === "dead-lettered" || outcome.kind === "discarded";
}

