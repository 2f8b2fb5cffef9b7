/**
 * Dead-letter streams (`{stream}.dead` and caracal.audit.events.dlq). The `.dead` streams have no consumer
 * group in the registry, so they are read, never consumed: XLEN and the oldest entry for metrics, XRANGE
 * past the last seen id to count reasons, XREVRANGE to list. Every replica measures on its own (the gauges
 * are the same everywhere; reason counters count each entry once per replica process).
 */
import type { Fields, RedisClient, Topic } from "@caracal/streams-core";
import { Topics, streamKey } from "@caracal/streams-core";
import type { Logger } from "pino";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";

import { entryIdMs } from "./state.js";

/** Every dead-letter stream of the registry. */
export function deadLetterStreams(): string[] {
  const topics: Topic[] = Object.values(Topics);
  return [...new Set(topics.map((t) => t.deadLetterStream).filter((s): s is string => s !== undefined))].sort();
}

/** A dead letter in the one format of WIRE §4; older `src_<field>` copies are read as `src.<field>`. */
export interface DeadLetterView {
  id: string;
  reason: string;
  src_stream: string;
  src_id: string;
  group: string;
  consumer: string;
  deliveries: number;
  error: string;
  received_at: string;
  /** The original entry's fields. */
  src: Record<string, string>;
}

const META = new Set(["reason", "src_stream", "src_id", "group", "consumer", "deliveries", "error", "received_at", "_sig"]);

export function toDeadLetterView(id: string, fields: Readonly<Fields>): DeadLetterView {
  const src: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k.startsWith("src.")) src[k.slice(4)] = v;
  }
  for (const [k, v] of Object.entries(fields)) {
    if (META.has(k) || !k.startsWith("src_")) continue;
    const name = k.slice(4);
    if (!(name in src)) src[name] = v;
  }
  return {
    id,
    reason: fields.reason ?? "",
    src_stream: fields.src_stream ?? "",
    src_id: fields.src_id ?? "",
    group: fields.group ?? "",
    consumer: fields.consumer ?? "",
    deliveries: Number(fields.deliveries ?? "0"),
    error: fields.error ?? "",
    received_at: fields.received_at ?? "",
    src,
  };
}

function toFields(flat: readonly string[]): Fields {
  const out: Fields = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

/** Newest first, at most `limit`, optionally before an entry id (exclusive) for paging. */
export async function listDeadLetters(redis: RedisClient, keyPrefix: string, stream: string, limit: number, before?: string): Promise<DeadLetterView[]> {
  const end = before === undefined ? "+" : `(${before}`;
  const rows = (await redis.xrevrange(streamKey(stream, keyPrefix), end, "-", "COUNT", limit)) as [string, string[]][];
  return rows.map(([id, flat]) => toDeadLetterView(id, toFields(flat)));
}

export class DeadLetterWatch {
  private readonly entries: Gauge<"stream">;
  private readonly oldestAge: Gauge<"stream">;
  private readonly reasons: Counter<"stream" | "reason">;
  private readonly lastSeen = new Map<string, string>();
  private readonly lastLength = new Map<string, number>();
  private healthy = false;

  constructor(
    private readonly o: { redis: RedisClient; keyPrefix: string; registry: Registry; logger: Logger; intervalMs: number; streams?: readonly string[] },
  ) {
    const registers = [o.registry];
    this.entries = new Gauge({ name: "caracal_observer_dead_letter_entries", help: "Entries in each dead-letter stream.", labelNames: ["stream"], registers });
    this.oldestAge = new Gauge({ name: "caracal_observer_dead_letter_oldest_age_seconds", help: "Age of the oldest entry of each dead-letter stream (0 when empty).", labelNames: ["stream"], registers });
    this.reasons = new Counter({ name: "caracal_observer_dead_letter_reasons_total", help: "Dead letters seen by this process, by reason.", labelNames: ["stream", "reason"], registers });
  }

  get ok(): boolean {
    return this.healthy;
  }

  /** Measures every stream once: one pipeline for lengths and oldest entries, then reasons of new entries. */
  async tick(): Promise<void> {
    const streams = this.o.streams ?? deadLetterStreams();
    const pipeline = this.o.redis.pipeline();
    for (const s of streams) {
      const key = streamKey(s, this.o.keyPrefix);
      pipeline.xlen(key);
      pipeline.xrange(key, "-", "+", "COUNT", 1);
      const from = this.lastSeen.get(s);
      pipeline.xrange(key, from === undefined ? "-" : `(${from}`, "+", "COUNT", 1000);
    }
    const results = (await pipeline.exec()) ?? [];
    const now = Date.now();
    streams.forEach((s, i) => {
      const [lenErr, len] = results[i * 3] ?? [];
      const [oldErr, oldest] = results[i * 3 + 1] ?? [];
      const [newErr, fresh] = results[i * 3 + 2] ?? [];
      if (lenErr || oldErr || newErr) throw lenErr ?? oldErr ?? newErr;
      const length = Number(len);
      this.entries.set({ stream: s }, length);
      const first = (oldest as [string, string[]][])[0];
      this.oldestAge.set({ stream: s }, first === undefined ? 0 : Math.max(0, (now - entryIdMs(first[0])) / 1000));
      for (const [id, flat] of fresh as [string, string[]][]) {
        this.reasons.inc({ stream: s, reason: toFields(flat).reason ?? "unknown" });
        this.lastSeen.set(s, id);
      }
      const before = this.lastLength.get(s);
      if (before !== undefined && length > before) this.o.logger.warn({ stream: s, entries: length, added: length - before }, "dead-letter stream grew");
      this.lastLength.set(s, length);
    });
    this.healthy = true;
  }

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.tick();
      } catch (error) {
        this.healthy = false;
        this.o.logger.error({ err: error }, "dead-letter watch failed");
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.o.intervalMs);
        signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
      });
    }
  }
}
