import type { Logger } from "pino";
import type pg from "pg";
import { Counter, Gauge, type Registry } from "prom-client";
import {
  StreamConsumer,
  Topics,
  parseTopicSchema,
  sleep,
  verifySignature,
  type RedisClient,
  type SignaturePolicy,
  type Step,
  type TopicMessage,
} from "@caracal/streams-core";

import { anchorsOf, entryIdMs, type AnchorValues } from "./anchors.js";
import { compactExpiry, compactKey, compactNow } from "./compact.js";
import { RevocationSeedError } from "./errors.js";
import { streamActiveRevocations } from "./seed.js";

/** What `check` answers. `unknown`: the cache may be missing revocations; callers deny. */
export type RevocationOutcome = "revoked" | "active" | "unknown";

export interface RevocationCacheOptions {
  redis: RedisClient;
  pool: pg.Pool;
  signing: SignaturePolicy;
  /** Unique per replica; labels the fan-out reader in logs. */
  consumer: string;
  /** CARACAL_KEY_PREFIX. Default "". */
  keyPrefix?: string;
  /** Life of an entry heard on the stream, from the entry's stream time. Default 24 h (upstream's key TTL). */
  ttlMs?: number;
  /** Re-seed from the table this often. Default 30,000 ms. */
  reseedIntervalMs?: number;
  /** `unknown` when the last read reply from Redis is older than this. Default 10,000 ms. */
  maxContactAgeMs?: number;
  /** `unknown` when the last successful seed is older than this. Default 70,000 ms. */
  maxSeedAgeMs?: number;
  /** Fan-out XREAD BLOCK time; must be well below maxContactAgeMs. Default 2,000 ms. */
  blockMs?: number;
  /** Expired entries are dropped this often. Default 60,000 ms. */
  sweepIntervalMs?: number;
  registry?: Registry;
  logger: Logger;
  /** Called with the entry ids applied from the stream (benchmarks, tests). */
  onApplied?: (entries: ReadonlyArray<{ id: string; anchors: readonly string[] }>) => void;
}

/**
 * In-process set of revoked anchors for a service that issues or verifies mandates.
 *
 * Contract:
 * - Fed by `caracal.sessions.revoke` in fan-out (every replica sees every revocation) and seeded from
 *   `session_revocations` at start and every `reseedIntervalMs`, so a replica started after a revocation
 *   still denies it. The stream position is fixed before the seed reads the table: nothing committed in
 *   between is missed. Seeds only add entries; entries leave only when they expire.
 * - Keyed by anchor id alone, like upstream's Redis keys (`caracal:revoked:sessions:{id}`): a check is NOT
 *   zone-scoped: an id revoked in any zone and under any anchor kind is revoked. Anchor ids are unique
 *   (UUIDs), so this only ever errs toward denial. `zone` labels the check.
 * - Rejected stream entries (bad signature, schema) are skipped here, never dead-lettered: the
 *   revocation consumer's group dead-letters them exactly once.
 */
export class RevocationCache {
  /** compactKey(anchor id) -> compactExpiry(expiry), see ./compact.ts. */
  private readonly entries = new Map<string, number>();
  private consumer: StreamConsumer<TopicMessage<"sessionsRevoke">> | undefined;
  private readonly o: Required<Omit<RevocationCacheOptions, "registry" | "onApplied" | "keyPrefix">> & { keyPrefix: string };
  private lastSeedAtMs: number | undefined;
  private seededOnce = false;
  private running: Promise<void> | undefined;
  private readonly checks: Counter<"outcome"> | undefined;
  private readonly skipped: Counter<"reason"> | undefined;
  private readonly onApplied: RevocationCacheOptions["onApplied"];

  constructor(options: RevocationCacheOptions) {
    this.o = {
      redis: options.redis,
      pool: options.pool,
      signing: options.signing,
      consumer: options.consumer,
      keyPrefix: options.keyPrefix ?? "",
      ttlMs: options.ttlMs ?? 86_400_000,
      reseedIntervalMs: options.reseedIntervalMs ?? 30_000,
      maxContactAgeMs: options.maxContactAgeMs ?? 10_000,
      maxSeedAgeMs: options.maxSeedAgeMs ?? 70_000,
      blockMs: options.blockMs ?? 2000,
      sweepIntervalMs: options.sweepIntervalMs ?? 60_000,
      logger: options.logger,
    };
    this.onApplied = options.onApplied;
    const r = options.registry;
    if (r !== undefined) {
      this.checks = new Counter({ name: "caracal_revocation_checks_total", help: "Revocation checks by outcome.", labelNames: ["outcome"], registers: [r] });
      this.skipped = new Counter({
        name: "caracal_revocation_cache_skipped_total",
        help: "Stream entries the cache's fan-out reader skipped (bad signature, schema), by reason; the consumer group dead-letters them.",
        labelNames: ["reason"],
        registers: [r],
      });
      // eslint-disable-next-line @typescript-eslint/no-this-alias
      const self = this;
      new Gauge({ name: "caracal_revocation_cache_entries", help: "Revoked anchors held in memory.", registers: [r], collect() { this.set(self.size); } });
      new Gauge({
        name: "caracal_revocation_seconds_since_contact",
        help: "Seconds since the last read reply from Redis (-1 before the first).",
        registers: [r],
        collect() { const at = self.lastContactAt; this.set(at === undefined ? -1 : (Date.now() - at) / 1000); },
      });
      new Gauge({
        name: "caracal_revocation_seconds_since_seed",
        help: "Seconds since the last successful seed from PostgreSQL (-1 before the first).",
        registers: [r],
        collect() { const at = self.lastSeedAtMs; this.set(at === undefined ? -1 : (Date.now() - at) / 1000); },
      });
    }
  }

  private createConsumer(startId: string): StreamConsumer<TopicMessage<"sessionsRevoke">> {
    return new StreamConsumer<TopicMessage<"sessionsRevoke">>({
      redis: this.o.redis,
      topic: Topics.sessionsRevoke,
      group: Topics.sessionsRevoke.groups.gateway,
      // The `_sig` check and the topic's schema, then skip what they reject: no dead letter from a cache
      // (the revocation consumer's group writes exactly one, whatever the number of replicas).
      steps: [this.skipRejections(), verifySignature(this.o.signing), parseTopicSchema()],
      consumer: this.o.consumer,
      signing: this.o.signing,
      keyPrefix: this.o.keyPrefix,
      delivery: "fanout",
      startId,
      blockMs: this.o.blockMs,
      batchSize: 500,
      logger: this.o.logger,
      handleBatch: async (messages) => {
        const applied: Array<{ id: string; anchors: string[] }> = [];
        for (const m of messages) {
          const expiresAtMs = entryIdMs(m.id) + this.o.ttlMs;
          const ids = anchorsOf(m.body).map(([, id]) => id);
          for (const id of ids) this.add(id, expiresAtMs);
          applied.push({ id: m.id, anchors: ids });
        }
        this.onApplied?.(applied);
      },
    });
  }

  /** Settles rejected entries without a dead letter: counted, logged at debug, acknowledged (fan-out: passed). */
  private skipRejections(): Step {
    return (next) => async (batch, context) => {
      const outcomes = await next(batch, context);
      for (const [id, outcome] of outcomes) {
        if (outcome.kind !== "reject") continue;
        outcomes.set(id, { kind: "discarded", reason: outcome.reason, error: outcome.error });
        this.skipped?.inc({ reason: outcome.reason });
        this.o.logger.debug({ id, reason: outcome.reason }, "revocation cache skipped a rejected entry (the consumer group dead-letters it)");
      }
      return outcomes;
    };
  }

  get size(): number {
    return this.entries.size;
  }

  get lastContactAt(): number | undefined {
    return this.consumer?.lastContactAt;
  }

  get lastSeedAt(): number | undefined {
    return this.lastSeedAtMs;
  }

  /** True once seeded and while both Redis contact and the last seed are within their bounds. */
  get fresh(): boolean {
    return this.staleReason() === undefined;
  }

  /** Why answers are unknown now, or undefined when fresh. */
  staleReason(now = Date.now()): string | undefined {
    if (!this.seededOnce || this.lastSeedAtMs === undefined) return "not seeded yet";
    const contact = this.consumer?.lastContactAt;
    if (contact === undefined) return "no contact with Redis yet";
    if (now - contact > this.o.maxContactAgeMs) return `no contact with Redis for ${Math.round((now - contact) / 1000)} s`;
    if (now - this.lastSeedAtMs > this.o.maxSeedAgeMs) return `last seed from PostgreSQL ${Math.round((now - this.lastSeedAtMs) / 1000)} s ago`;
    return undefined;
  }

  /** Adds (or extends) a revoked anchor id. */
  add(anchorId: string, expiresAtMs: number): void {
    this.addKey(compactKey(anchorId), expiresAtMs);
  }

  private addKey(key: string, expiresAtMs: number): void {
    const expiry = compactExpiry(expiresAtMs);
    const current = this.entries.get(key);
    if (current === undefined || current < expiry) this.entries.set(key, expiry);
  }

  /** Whether one anchor id is revoked now, ignoring freshness. */
  isRevoked(anchorId: string, now = Date.now()): boolean {
    const at = this.entries.get(compactKey(anchorId));
    return at !== undefined && at > compactNow(now);
  }

  /**
   * Answers for a mandate's anchors (the five anchors plus `edge_id`): `revoked` when any present anchor is
   * revoked (even when stale: the answer only denies), else `unknown` when stale, else `active`. A mandate
   * with no present anchor is `active` when fresh. `zone` is not part of the lookup (see the class).
   */
  check(_zone: string, anchors: AnchorValues): RevocationOutcome {
    const now = Date.now();
    let outcome: RevocationOutcome = "active";
    for (const [, id] of anchorsOf(anchors)) {
      if (this.isRevoked(id, now)) {
        outcome = "revoked";
        break;
      }
    }
    if (outcome === "active" && this.staleReason(now) !== undefined) outcome = "unknown";
    this.checks?.inc({ outcome });
    return outcome;
  }

  /** Reads the table into memory (only adds). */
  async seed(): Promise<number> {
    const started = Date.now();
    try {
      const now = Date.now();
      const rows = await streamActiveRevocations(this.o.pool, (key, expiresAtMs) => {
        if (expiresAtMs > now) this.addKey(key, expiresAtMs);
      });
      this.lastSeedAtMs = started;
      this.seededOnce = true;
      return rows;
    } catch (error) {
      throw new RevocationSeedError("seeding the revocation cache from session_revocations failed", { cause: error });
    }
  }

  /** Drops expired entries. */
  sweep(now = Date.now()): number {
    let dropped = 0;
    const cut = compactNow(now);
    for (const [id, at] of this.entries) {
      if (at <= cut) {
        this.entries.delete(id);
        dropped++;
      }
    }
    return dropped;
  }

  /**
   * Fixes the stream position, seeds, then runs the fan-out reader, the re-seed and the sweep until
   * `signal` aborts. Resolves once the first seed is done (throws if it fails); `done` settles at stop.
   */
  async start(signal: AbortSignal): Promise<{ done: Promise<void> }> {
    const key = `${this.o.keyPrefix}${Topics.sessionsRevoke.stream}`;
    const last = (await this.o.redis.xrevrange(key, "+", "-", "COUNT", 1)) as Array<[string, string[]]>;
    const consumer = this.createConsumer(last[0]?.[0] ?? "0-0");
    this.consumer = consumer;
    const rows = await this.seed();
    this.o.logger.info({ rows, entries: this.size, seconds: (Date.now() - (this.lastSeedAtMs ?? Date.now())) / 1000 }, "revocation cache seeded");
    const reader = consumer.run(signal);
    const loops = [
      this.every(signal, this.o.reseedIntervalMs, async () => {
        await this.seed();
      }, "re-seed"),
      this.every(signal, this.o.sweepIntervalMs, async () => {
        this.sweep();
      }, "sweep"),
    ];
    this.running = Promise.all([reader, ...loops]).then(() => undefined);
    return { done: this.running };
  }

  private async every(signal: AbortSignal, intervalMs: number, fn: () => Promise<void>, what: string): Promise<void> {
    while (await sleep(intervalMs, signal)) {
      try {
        await fn();
      } catch (error) {
        this.o.logger.error({ err: error }, `revocation cache ${what} failed`);
      }
    }
  }
}
