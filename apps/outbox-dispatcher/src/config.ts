/**
 * The outbox dispatcher's settings: the only reader of the environment. Seed 001 "Outbox configuration"
 * with its defaults, plus the settings this project adds. Every bad variable is named in one ConfigError;
 * values are never echoed (a bad value may be a key).
 */
import type { CaracalServiceSettings } from "@caracal/service-kit";
import { ConfigProblems, caracalModeOf, describeSettings, caracalServiceEnv, caracalServiceSettings, intVar, loadEnv, streamSigningFromEnv } from "@caracal/service-kit";
import { z } from "zod";

const DAY_MS = 86_400_000;

export const envSchema = z.object({
  ...caracalServiceEnv({ port: 9091 }),
  /** Fallback poll interval when no NOTIFY arrives. Default 250 ms (seed). */
  CARACAL_OUTBOX_POLL_MS: intVar(250, { min: 1, max: 3_600_000 }),
  /** Rows claimed, published and marked per batch. Default 32 (seed). */
  CARACAL_OUTBOX_BATCH: intVar(32, { min: 1, max: 10_000 }),
  /** Attempts after which a row is failed and left for inspection. Default 100 (seed). */
  CARACAL_OUTBOX_MAX_ATTEMPTS: intVar(100, { min: 1 }),
  /** MAXLEN ~ of every XADD. Default 100,000 (seed). */
  CARACAL_OUTBOX_STREAM_MAXLEN: intVar(100_000, { min: 1 }),
  /** How long a claimed row is reserved for this replica; a crashed replica's rows are retaken after it. Default 30,000 ms. */
  CARACAL_OUTBOX_LEASE_MS: intVar(30_000, { min: 100 }),
  /** A publish that takes longer is a transient failure of the whole batch. Default 5,000 ms; below the lease. */
  CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS: intVar(5_000, { min: 10 }),
  /** First retry delay; doubles per attempt with jitter, capped at 60 s (seed). Default 500 ms. */
  CARACAL_OUTBOX_BACKOFF_BASE_MS: intVar(500, { min: 1, max: 60_000 }),
  /** Dispatched rows older than this are deleted. Default 7 days. */
  CARACAL_OUTBOX_RETENTION_MS: intVar(7 * DAY_MS, { min: 0 }),
  /** How often the retention sweep runs. Default 60,000 ms. */
  CARACAL_OUTBOX_CLEANUP_INTERVAL_MS: intVar(60_000, { min: 100 }),
  /** Rows deleted per retention statement (small, so the sweep never holds long locks). Default 500. */
  CARACAL_OUTBOX_CLEANUP_BATCH: intVar(500, { min: 1, max: 100_000 }),
  /** Replica name, part of `locked_by`. Default outbox-dispatcher. */
  HOSTNAME: z.string().min(1).default("outbox-dispatcher"),
});

export interface DispatcherConfig extends CaracalServiceSettings {
  pollMs: number;
  batchSize: number;
  maxAttempts: number;
  streamMaxLen: number;
  leaseMs: number;
  publishTimeoutMs: number;
  backoffBaseMs: number;
  retention: { retentionMs: number; intervalMs: number; batchSize: number };
  hostname: string;
}

/** Parses and validates the environment; throws one ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): DispatcherConfig {
  const problems = new ConfigProblems();
  const parsed = problems.check(() => loadEnv(envSchema, env));
  const mode = caracalModeOf(env);
  const signing = problems.check(() => streamSigningFromEnv(env, mode));
  if (parsed !== undefined && parsed.CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS >= parsed.CARACAL_OUTBOX_LEASE_MS) {
    problems.add("CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS: must be below CARACAL_OUTBOX_LEASE_MS (a lease must outlive a publish)");
  }
  if (!problems.empty || parsed === undefined || signing === undefined) throw problems.error();
  const e = parsed;
  return {
    ...caracalServiceSettings(e, mode, signing),
    pollMs: e.CARACAL_OUTBOX_POLL_MS,
    batchSize: e.CARACAL_OUTBOX_BATCH,
    maxAttempts: e.CARACAL_OUTBOX_MAX_ATTEMPTS,
    streamMaxLen: e.CARACAL_OUTBOX_STREAM_MAXLEN,
    leaseMs: e.CARACAL_OUTBOX_LEASE_MS,
    publishTimeoutMs: e.CARACAL_OUTBOX_PUBLISH_TIMEOUT_MS,
    backoffBaseMs: e.CARACAL_OUTBOX_BACKOFF_BASE_MS,
    retention: { retentionMs: e.CARACAL_OUTBOX_RETENTION_MS, intervalMs: e.CARACAL_OUTBOX_CLEANUP_INTERVAL_MS, batchSize: e.CARACAL_OUTBOX_CLEANUP_BATCH },
    hostname: e.HOSTNAME,
  };
}

/** Settings fit for the start-up log: no key material, no URL passwords (service-kit `describeSettings`). */
export function describeConfig(c: DispatcherConfig): Record<string, unknown> {
  return describeSettings(c) as Record<string, unknown>;
}
