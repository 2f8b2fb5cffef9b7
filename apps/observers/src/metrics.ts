/** Observer metrics per stream, zone and event type. Zone values are bounded (see `ZoneLabels`). */
import { Counter } from "prom-client";
import type { Registry } from "prom-client";

/**
 * Keeps the zone label's cardinality bounded: the first `max` distinct zones seen by this process get
 * their own label value, every later zone is counted as "other".
 */
export class ZoneLabels {
  private readonly seen = new Set<string>();
  constructor(private readonly max: number) {}
  of(zone: string | undefined): string {
    if (zone === undefined || zone === "") return "none";
    if (this.seen.has(zone)) return zone;
    if (this.seen.size >= this.max) return "other";
    this.seen.add(zone);
    return zone;
  }
}

export interface ObserverMetrics {
  events: Counter<"stream" | "zone" | "event">;
  duplicates: Counter<"stream">;
}

export function createObserverMetrics(registry: Registry): ObserverMetrics {
  const registers = [registry];
  return {
    events: new Counter({ name: "caracal_observer_events_total", help: "Events applied to derived state, by stream, zone and event type.", labelNames: ["stream", "zone", "event"], registers }),
    duplicates: new Counter({ name: "caracal_observer_duplicates_total", help: "Entries dropped as duplicates (outbox_id, dedupe_key or entry id).", labelNames: ["stream"], registers }),
  };
}
