/**
 * Counts what the inner steps settled: `acked` (succeeded), `deadLettered` (letter written here), `discarded`
 * (no dead-letter stream). Placed outermost, it sees every entry's final outcome. Counts are taken when the
 * pipeline returns, before the reader's XACK; an ack that fails brings the entries back and they are
 * counted again when they settle. Read-side figures (`received`, `reclaimed`, `trimmed`, `lag`, `pending`,
 * `contact`) are reported by the readers, `handlerDuration` by the handler processor.
 */
import type { DeadLetterReason } from "../../errors.js";
import type { Step } from "../pipeline.js";

export function countOutcomes(): Step {
  return (next) => async (batch, context) => {
    const outcomes = await next(batch, context);
    const m = context.metrics;
    const dead = new Map<DeadLetterReason, number>();
    const discarded = new Map<DeadLetterReason, number>();
    for (const o of outcomes.values()) {
      // fan-out: a letter another replica writes is counted there
      if (o.kind === "dead-lettered" && o.byOtherReplica !== true) dead.set(o.reason, (dead.get(o.reason) ?? 0) + 1);
      else if (o.kind === "discarded") discarded.set(o.reason, (discarded.get(o.reason) ?? 0) + 1);
    }
    let acked = 0;
    for (const d of batch) if (!outcomes.has(d.id)) acked++;
    if (acked > 0) m.acked?.(acked);
    for (const [reason, n] of dead) m.deadLettered?.(reason, n);
    for (const [reason, n] of discarded) m.discarded?.(reason, n);
    return outcomes;
  };
}
