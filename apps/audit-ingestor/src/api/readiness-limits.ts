/**
 * Readiness limits, as upstream's audit service names them: the replica reports not ready while the
 * audit dead letters hold more than AUDIT_READY_DLQ_MAX entries, while more than AUDIT_READY_LAG_MAX
 * entries wait to be stored (not yet delivered to the group, or delivered and not acknowledged), or while
 * the oldest pending entry has been idle longer than AUDIT_READY_PEL_OLDEST_SECS_MAX seconds. 0 (the
 * default) turns a limit off. Redis is sampled on a timer, so a probe never waits on it.
 */
import type { RedisClient } from "@caracal/streams-core";
import { Topics, errorMessage, sleep, streamKey } from "@caracal/streams-core";
import { z } from "zod";

const TOPIC = Topics.auditEvents;

/** The variables, merged into the app's env schema (src/config.ts). */
export const readinessLimitsSchema = z.object({
  AUDIT_READY_DLQ_MAX: z.coerce.number().int().min(0).default(0),
  AUDIT_READY_LAG_MAX: z.coerce.number().int().min(0).default(0),
  AUDIT_READY_PEL_OLDEST_SECS_MAX: z.coerce.number().int().min(0).default(0),
});

export interface ReadinessLimits {
  dlqMax: number;
  lagMax: number;
  pendingOldestSecondsMax: number;
}

export function readinessLimitsFrom(env: z.output<typeof readinessLimitsSchema>): ReadinessLimits {
  return { dlqMax: env.AUDIT_READY_DLQ_MAX, lagMax: env.AUDIT_READY_LAG_MAX, pendingOldestSecondsMax: env.AUDIT_READY_PEL_OLDEST_SECS_MAX };
}

export interface BacklogSample {
  dlqLength: number;
  /** Entries not yet delivered to the group plus those delivered and not acknowledged. */
  waiting: number;
  /** Idle time of the oldest pending entry, 0 when none. */
  pendingOldestSeconds: number;
}

export async function sampleBacklog(redis: RedisClient, keyPrefix: string): Promise<BacklogSample> {
  const key = streamKey(TOPIC.stream, keyPrefix);
  const group = TOPIC.groups.auditIngestor;
  const [dlqLength, groups, oldest] = await Promise.all([
    redis.xlen(streamKey(TOPIC.deadLetterStream as string, keyPrefix)),
    (redis.xinfo("GROUPS", key) as Promise<unknown[]>).catch((error: unknown) => {
      if (/no such key/i.test(errorMessage(error))) return [];
      throw error;
    }),
    (redis.xpending(key, group, "-", "+", 1) as Promise<Array<[string, string, number, number]>>).catch((error: unknown) => {
      if (/NOGROUP|no such key/i.test(errorMessage(error))) return [];
      throw error;
    }),
  ]);
  let waiting = 0;
  for (const raw of groups) {
    const g: Record<string, unknown> = {};
    if (Array.isArray(raw)) for (let i = 0; i + 1 < raw.length; i += 2) g[String(raw[i])] = raw[i + 1];
    if (g.name !== group) continue;
    waiting = Number(g.pending ?? 0) + Number(g.lag ?? 0);
  }
  const idleMs = oldest[0]?.[2] ?? 0;
  return { dlqLength, waiting, pendingOldestSeconds: Math.floor(Number(idleMs) / 1000) };
}

/** The first limit a sample breaks, as upstream's readiness reason; undefined when within every limit. */
export function brokenLimit(sample: BacklogSample, limits: ReadinessLimits): string | undefined {
  if (limits.dlqMax > 0 && sample.dlqLength > limits.dlqMax) return "audit_dlq_threshold";
  if (limits.lagMax > 0 && sample.waiting > limits.lagMax) return "audit_lag_threshold";
  if (limits.pendingOldestSecondsMax > 0 && sample.pendingOldestSeconds > limits.pendingOldestSecondsMax) return "audit_pel_oldest_threshold";
  return undefined;
}

/**
 * Samples every `intervalMs` until `signal` aborts; `ready()` is false while the last sample breaks a limit
 * (a failed sample keeps the previous verdict: Redis being away is the redis check's business).
 */
export function watchReadinessLimits(options: { redis: RedisClient; keyPrefix: string; limits: ReadinessLimits; intervalMs: number }, signal: AbortSignal) {
  const { limits } = options;
  const off = limits.dlqMax === 0 && limits.lagMax === 0 && limits.pendingOldestSecondsMax === 0;
  let reason: string | undefined;
  const stopped = off
    ? Promise.resolve()
    : (async () => {
        do {
          try {
            reason = brokenLimit(await sampleBacklog(options.redis, options.keyPrefix), limits);
          } catch {
            // keep the previous verdict
          }
        } while (await sleep(options.intervalMs, signal));
      })();
  return {
    ready: () => reason === undefined,
    reason: () => reason,
    stopped,
  };
}
