/**
 * Redis leases with fencing tokens: the only coordination between replicas beyond consumer groups.
 *
 * A lease is `SET <key> <owner> NX PX <ttl>`; every successful acquisition takes a fencing token from
 * `INCR <key>:fence`, so tokens grow with each new holder. Renewal (compare-and-PEXPIRE) and release
 * (compare-and-DEL) are single-key Lua scripts, so a lease works on one node and on a Redis Cluster alike
 * (the lease key and its fence key may live in different slots; no script touches both).
 *
 * A lease is advisory: a holder paused past its TTL (GC, a frozen VM) may still believe it holds it. The
 * fencing token is what makes that safe: the resource a leader writes to records the highest token it
 * has seen and refuses writes carrying a lower one (see the audit exporter's watermark).
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

import { CaracalError, sleep } from "@caracal/streams-core";
import type { RedisClient } from "@caracal/streams-core";
import type { Logger } from "pino";
import { Gauge } from "prom-client";
import type { Registry } from "prom-client";

const RENEW_SCRIPT = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE_SCRIPT = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`;

export type LeaseLossReason = "renew_rejected" | "expired" | "released";

export interface RedisLeaseOptions {
  redis: RedisClient;
  /** Lease name, e.g. `audit:leader:export`. The fence counter is `<key>:fence`. */
  key: string;
  /** Prepended to both keys (tests, tenants). Default "". */
  keyPrefix?: string;
  /** Lease lifetime without renewal. Default 15000. */
  ttlMs?: number;
  /** Renewal period. Default ttlMs / 3, so two renewals can fail before the lease expires. */
  renewEveryMs?: number;
  /** Unique owner token stored in the key. Default `<hostname>:<pid>:<random>`. */
  owner?: string;
  logger?: Logger;
  /** Called once each time a held lease is lost (not on `release`). */
  onLost?: (reason: LeaseLossReason) => void;
}

/**
 * One lease held by this process. Not re-entrant: `tryAcquire` while held is a no-op returning true.
 * Concurrency: every method may be called at any time; renewals run on a timer while held.
 */
export class RedisLease {
  readonly key: string;
  readonly fenceKey: string;
  readonly owner: string;
  readonly ttlMs: number;
  readonly renewEveryMs: number;
  private readonly redis: RedisClient;
  private readonly logger: Logger | undefined;
  private readonly onLost: ((reason: LeaseLossReason) => void) | undefined;
  private token: number | undefined;
  private controller: AbortController | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  /** Local time before which the lease is certainly still ours (send time of the last confirmed SET/PEXPIRE + ttl). */
  private validUntilMs = 0;

  constructor(options: RedisLeaseOptions) {
    this.redis = options.redis;
    this.key = `${options.keyPrefix ?? ""}${options.key}`;
    this.fenceKey = `${this.key}:fence`;
    this.ttlMs = options.ttlMs ?? 15_000;
    this.renewEveryMs = options.renewEveryMs ?? Math.max(1, Math.floor(this.ttlMs / 3));
    if (this.renewEveryMs >= this.ttlMs) throw new RangeError("renewEveryMs must be below ttlMs");
    this.owner = options.owner ?? `${hostname()}:${process.pid}:${randomBytes(6).toString("hex")}`;
    this.logger = options.logger;
    this.onLost = options.onLost;
  }

  /** True while the lease is believed held: acquired, not lost, not released, not past its TTL. */
  get held(): boolean {
    return this.controller !== undefined && !this.controller.signal.aborted && Date.now() < this.validUntilMs;
  }

  /** Fencing token of the current tenure (undefined when not held). Strictly greater than any earlier holder's. */
  get fencingToken(): number | undefined {
    return this.held ? this.token : undefined;
  }

  /** Aborted when the current tenure ends (lost or released). An aborted signal when not held. */
  get signal(): AbortSignal {
    return this.controller?.signal ?? AbortSignal.abort("lease not held");
  }

  /**
   * One attempt: SET NX PX, then INCR the fence, then a compare-and-PEXPIRE proving the token was taken
   * while we still owned the key (so a holder paused between SET and INCR cannot end up with a token above
   * its successor's). Redis errors propagate; a held lease is left as it is.
   */
  async tryAcquire(): Promise<boolean> {
    if (this.held) return true;
    const sentAt = Date.now();
    const set = await this.redis.set(this.key, this.owner, "PX", this.ttlMs, "NX");
    if (set !== "OK") return false;
    let token: number;
    try {
      token = await this.redis.incr(this.fenceKey);
      const confirmAt = Date.now();
      const renewed = await this.renewOnce();
      if (!renewed) return false;
      this.validUntilMs = Math.min(sentAt, confirmAt) + this.ttlMs;
    } catch (error) {
      await this.releaseKey().catch(() => undefined);
      throw error;
    }
    this.token = token;
    this.controller = new AbortController();
    this.scheduleRenew();
    this.scheduleExpiry();
    this.logger?.info({ lease: this.key, fencingToken: token }, "lease acquired");
    return true;
  }

  /** Ends the tenure and deletes the key if still ours. Idempotent. */
  async release(): Promise<void> {
    const wasHeld = this.controller !== undefined && !this.controller.signal.aborted;
    this.endTenure("released");
    if (!wasHeld) return;
    try {
      await this.releaseKey();
      this.logger?.info({ lease: this.key }, "lease released");
    } catch (error) {
      // The key expires on its own after the TTL; a failed DEL only delays the next leader.
      this.logger?.warn({ lease: this.key, err: error }, "lease release failed; it will expire");
    }
  }

  private async renewOnce(): Promise<boolean> {
    const result = await this.redis.eval(RENEW_SCRIPT, 1, this.key, this.owner, String(this.ttlMs));
    return Number(result) === 1;
  }

  private async releaseKey(): Promise<void> {
    await this.redis.eval(RELEASE_SCRIPT, 1, this.key, this.owner);
  }

  private scheduleRenew(): void {
    this.renewTimer = setTimeout(() => void this.renewTick(), this.renewEveryMs);
    this.renewTimer.unref();
  }

  private scheduleExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(() => {
      if (!this.controller || this.controller.signal.aborted) return;
      // Timers run on a monotonic clock and may fire a millisecond before Date.now() reaches the bound.
      if (Date.now() >= this.validUntilMs) this.lose("expired");
      else this.scheduleExpiry();
    }, Math.max(0, this.validUntilMs - Date.now() + 1));
    this.expiryTimer.unref();
  }

  private async renewTick(): Promise<void> {
    const controller = this.controller;
    if (!controller || controller.signal.aborted) return;
    const sentAt = Date.now();
    try {
      const ok = await this.renewOnce();
      if (controller !== this.controller || controller.signal.aborted) return;
      if (!ok) {
        this.lose("renew_rejected");
        return;
      }
      this.validUntilMs = sentAt + this.ttlMs;
      this.scheduleExpiry();
    } catch (error) {
      // Redis unreachable: keep trying until the TTL runs out; the expiry timer ends the tenure then.
      this.logger?.warn({ lease: this.key, err: error }, "lease renewal failed");
    }
    if (controller === this.controller && !controller.signal.aborted) this.scheduleRenew();
  }

  private lose(reason: LeaseLossReason): void {
    this.logger?.warn({ lease: this.key, fencingToken: this.token, reason }, "lease lost");
    this.endTenure(reason);
    this.onLost?.(reason);
  }

  private endTenure(reason: LeaseLossReason): void {
    clearTimeout(this.renewTimer);
    clearTimeout(this.expiryTimer);
    this.renewTimer = undefined;
    this.expiryTimer = undefined;
    this.validUntilMs = 0;
    if (this.controller && !this.controller.signal.aborted) this.controller.abort(new LeaseLostError(this.key, reason));
  }
}

/** The reason of an aborted lease signal. Transient: another replica holds the lease, or will. */
export class LeaseLostError extends CaracalError {
  readonly code = "LEASE_LOST";
  readonly permanent = false;
  constructor(
    readonly lease: string,
    readonly reason: LeaseLossReason,
  ) {
    super(`lease ${lease} ended: ${reason}`);
  }
}

export interface LeaderContext {
  /** Aborted when the lease is lost or the keeper stops. Pass it to every write that must stop then. */
  signal: AbortSignal;
  /** The tenure's fencing token: carry it to the resource the leader writes. */
  fencingToken: number;
}

export interface LeaseKeeperOptions {
  lease: RedisLease;
  /** One unit of leader-only work (e.g. one export pass). Called repeatedly while the lease is held. */
  task: (ctx: LeaderContext) => Promise<void>;
  /** Pause between two task runs while held. Default 1000. */
  taskEveryMs?: number;
  /** Pause between two acquisition attempts while another replica holds the lease. Default lease.ttlMs / 3. */
  acquireEveryMs?: number;
  logger?: Logger;
  /** Told every change of leadership (e.g. to set a gauge). */
  onLeaderChange?: (held: boolean) => void;
}

/**
 * Keeps trying to acquire a lease and runs a leader-only task while it is held. `run(signal)` returns
 * after `signal` aborts, the running task has returned, and the lease is released. A task that throws is
 * logged and run again after `taskEveryMs` (the lease is kept: the failure is the task's, not the lease's).
 */
export class LeaseKeeper {
  private readonly lease: RedisLease;
  private readonly task: (ctx: LeaderContext) => Promise<void>;
  private readonly taskEveryMs: number;
  private readonly acquireEveryMs: number;
  private readonly logger: Logger | undefined;
  private readonly onLeaderChange: ((held: boolean) => void) | undefined;

  constructor(options: LeaseKeeperOptions) {
    this.lease = options.lease;
    this.task = options.task;
    this.taskEveryMs = options.taskEveryMs ?? 1_000;
    this.acquireEveryMs = options.acquireEveryMs ?? Math.max(1, Math.floor(options.lease.ttlMs / 3));
    this.logger = options.logger;
    this.onLeaderChange = options.onLeaderChange;
  }

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let acquired = false;
      try {
        acquired = await this.lease.tryAcquire();
      } catch (error) {
        this.logger?.warn({ lease: this.lease.key, err: error }, "lease acquisition failed");
      }
      if (!acquired) {
        await sleep(this.acquireEveryMs, signal);
        continue;
      }
      const token = this.lease.fencingToken;
      if (token === undefined) continue;
      this.onLeaderChange?.(true);
      const tenure = AbortSignal.any([signal, this.lease.signal]);
      try {
        while (!tenure.aborted) {
          try {
            await this.task({ signal: tenure, fencingToken: token });
          } catch (error) {
            if (!tenure.aborted) this.logger?.error({ lease: this.lease.key, err: error }, "leader task failed");
          }
          await sleep(this.taskEveryMs, tenure);
        }
      } finally {
        await this.lease.release();
        this.onLeaderChange?.(false);
      }
    }
  }
}

/**
 * `caracal_leader{lease}`: 1 while this replica holds the lease, else 0. One gauge per registry, shared by
 * every lease of the process.
 */
export function leaderGauge(registry: Registry): Gauge<"lease"> {
  const existing = registry.getSingleMetric("caracal_leader") as Gauge<"lease"> | undefined;
  return existing ?? new Gauge({ name: "caracal_leader", help: "1 while this replica holds the named lease", labelNames: ["lease"], registers: [registry] });
}
