/**
 * Dead-lettering: writes a signed dead letter (reason, source id, group, consumer, deliveries, error, every
 * field) for each `reject` outcome coming back from the inner steps, and turns it into `dead-lettered`
 * (acknowledged by the reader). A letter whose write failed stays `reject`: the entry is not acknowledged
 * and comes back. A topic without a dead-letter stream (the dead-letter streams themselves) turns rejects
 * into `discarded`, logged at error level.
 *
 * Fan-out (every replica sees every entry): a letter is written by whichever replica first sets the
 * `dlq-once:<stream>:<id>` marker; the others count it as dead-lettered without writing. A failed write
 * removes the marker again.
 */
import type { Fields } from "../../codec.js";
import type { DeadLetter } from "../../dead-letter.js";
import type { Delivery, Outcome, PipelineContext, Step } from "../pipeline.js";

type Reject = Extract<Outcome, { kind: "reject" }>;

export function deadLetterRejections(): Step {
  return (next) => async (batch, context) => {
    const outcomes = await next(batch, context);
    const rejects: Array<[Delivery, Reject]> = [];
    const byId = new Map<string, Delivery>();
    for (const d of batch) byId.set(d.id, d);
    for (const [id, outcome] of outcomes) {
      const d = byId.get(id);
      if (outcome.kind === "reject" && d !== undefined) rejects.push([d, outcome]);
    }
    if (rejects.length === 0) return outcomes;
    const dlqStream = context.topic.deadLetterStream;
    if (dlqStream === undefined) {
      for (const [d, r] of rejects) {
        outcomes.set(d.id, { kind: "discarded", reason: r.reason, error: r.error });
        context.logger.error({ id: d.id, reason: r.reason, error: r.error }, "entry rejected on a stream with no dead letters: acknowledged and dropped");
      }
      return outcomes;
    }
    const mine = context.delivery === "fanout" ? await claimOnce(rejects, context) : rejects;
    const markers = new Map<string, string>();
    if (context.delivery === "fanout") {
      for (const [d] of mine) markers.set(d.id, markerKey(context, d.id));
      for (const [d, r] of rejects) {
        if (!markers.has(d.id)) outcomes.set(d.id, { kind: "dead-lettered", reason: r.reason, error: r.error, byOtherReplica: true });
      }
    }
    if (mine.length === 0) return outcomes;
    const errors = await context.deadLetters.write(
      dlqStream,
      mine.map(([d, r]) => letter(context, d, r)),
    );
    const unmark: string[] = [];
    mine.forEach(([d, r], i) => {
      const error = errors[i];
      if (error === undefined) {
        outcomes.set(d.id, { kind: "dead-lettered", reason: r.reason, error: r.error });
        context.logger.warn({ id: d.id, reason: r.reason, deliveries: d.deliveries, error: r.error }, "entry dead-lettered");
      } else {
        context.reportError(error, "dead-letter write");
        context.metrics.deadLetterWriteFailed?.(1);
        context.logger.error({ id: d.id, reason: r.reason, err: error }, "dead-letter write failed: entry stays pending");
        const marker = markers.get(d.id);
        if (marker !== undefined) unmark.push(marker);
      }
    });
    if (unmark.length > 0) await Promise.all(unmark.map((k) => context.redis.del(k))).catch((e: unknown) => context.logger.warn({ err: e }, "removing dlq-once markers failed"));
    return outcomes;
  };
}

function markerKey(context: PipelineContext, id: string): string {
  return `${context.keyPrefix}dlq-once:${context.topic.stream}:${id}`;
}

/** SET NX of each marker, sent at once (separate keys, so no multi-key pipeline on a cluster). */
async function claimOnce(rejects: ReadonlyArray<[Delivery, Reject]>, context: PipelineContext): Promise<Array<[Delivery, Reject]>> {
  const results = await Promise.all(
    rejects.map(([d]) => context.redis.set(markerKey(context, d.id), context.consumer, "PX", context.deadLetterOnceTtlMs, "NX")),
  );
  return rejects.filter((_, i) => results[i] === "OK");
}

function letter(context: PipelineContext, d: Delivery, r: Reject): DeadLetter {
  return {
    reason: r.reason,
    srcStream: context.topic.stream,
    srcId: d.id,
    group: context.group,
    consumer: context.consumer,
    deliveries: d.deliveries,
    error: r.error,
    fields: d.fields as Fields,
  };
}

