/**
 * Bounds retries: a failure that would be retried is rejected as `max_deliveries_exceeded` once the entry
 * has been delivered `max` times; an entry already delivered more often (consumers crashed on it) is
 * rejected without being passed on. Without this step, transient failures are retried forever (a service
 * that owns exhaustion itself, like the audit ingestor, leaves it out).
 */
import { errorMessage } from "../../errors.js";
import type { Delivery, Outcomes, Step } from "../pipeline.js";
import { passOn } from "../pipeline.js";

export function limitDeliveries(max: number): Step {
  if (!Number.isFinite(max) || max < 1) throw new RangeError(`limitDeliveries: max must be a number >= 1, got ${String(max)}`);
  return (next) => async (batch, context) => {
    const passed: Delivery[] = [];
    const settled: Outcomes = new Map();
    for (const d of batch) {
      if (d.deliveries > max) settled.set(d.id, { kind: "reject", reason: "max_deliveries_exceeded", error: `delivered ${d.deliveries} times (max ${max})` });
      else passed.push(d);
    }
    const outcomes = await passOn(next, passed, settled, context);
    const deliveries = new Map(passed.map((d) => [d.id, d.deliveries]));
    for (const [id, outcome] of outcomes) {
      if (outcome.kind !== "retry") continue;
      if ((deliveries.get(id) ?? 0) >= max) outcomes.set(id, { kind: "reject", reason: "max_deliveries_exceeded", error: errorMessage(outcome.error) });
    }
    return outcomes;
  };
}
