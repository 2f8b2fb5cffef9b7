/**
 * The revocation consumer's settings: the only reader of the environment. Every bad variable is named in
 * one ConfigError; values are never echoed.
 */
import { Topics } from "@caracal/streams-core";
import type { CaracalServiceSettings } from "@caracal/service-kit";
import { ConfigProblems, boolVar, caracalModeOf, caracalServiceEnv, caracalServiceSettings, intVar, loadEnv, redactUrl, streamSigningFromEnv } from "@caracal/service-kit";
import { z } from "zod";

const revocationGroups = Object.values(Topics.sessionsRevoke.groups) as [string, ...string[]];

export const envSchema = z.object({
  ...caracalServiceEnv({ port: 9093 }),
  /** Consumer name, unique per replica. Default revocation-consumer-0. */
  HOSTNAME: z.string().min(1).default("revocation-consumer-0"),
  /** Group on caracal.sessions.revoke, one of the registry's groups of that topic. Default resource-revocation. */
  REVOCATION_GROUP: z.enum(revocationGroups).default(Topics.sessionsRevoke.groups.resource),
  /** Life of a revocation (table expires_at, Redis PX, cache entry), from the entry's stream time. Default 24 h. */
  REVOCATION_TTL_MS: intVar(86_400_000, { min: 1000 }),
  /** Rewrite keys missing from Redis from the table this often; 0 turns it off. Default 60,000 ms. */
  REVOCATION_RECONCILE_INTERVAL_MS: intVar(60_000, { min: 0 }),
  /** Rows per reconcile page (one pipelined SET NX per row). Default 5,000. */
  REVOCATION_RECONCILE_PAGE_ROWS: intVar(5_000, { min: 1, max: 100_000 }),
  /** The cache re-reads the table this often. Default 30,000 ms. */
  REVOCATION_RESEED_INTERVAL_MS: intVar(30_000, { min: 100 }),
  /** Answers are unknown (503) when the last read reply from Redis is older than this. Default 10,000 ms. */
  REVOCATION_MAX_CONTACT_AGE_MS: intVar(10_000, { min: 100 }),
  /** Answers are unknown (503) when the last seed is older than this. Default 70,000 ms. */
  REVOCATION_MAX_SEED_AGE_MS: intVar(70_000, { min: 100 }),
  /** XREAD(GROUP) BLOCK time of every reader. Default 2,000 ms. */
  REVOCATION_BLOCK_MS: intVar(2_000, { min: 10, max: 60_000 }),
  /** Entries per XREADGROUP and per table statement. Default 100. */
  REVOCATION_BATCH_SIZE: intVar(100, { min: 1, max: 10_000 }),
  /** Pending entries idle this long are reclaimed. Default 30,000 ms. */
  REVOCATION_CLAIM_IDLE_MS: intVar(30_000, { min: 100 }),
  /** Delivery at which an entry whose write keeps failing is dead-lettered max_deliveries_exceeded. Default 5. */
  REVOCATION_MAX_DELIVERIES: intVar(5, { min: 1, max: 1_000 }),
  /**
   * Benchmark hook: when "true" and the process has an IPC channel, send the parent `{ kind: "cache" | "keys",
   * anchors, at }` when revocations reach the cache or Redis. Default false.
   */
  REVOCATION_REPORT_APPLIED_IPC: boolVar(false),
});

export interface RevocationConfig extends CaracalServiceSettings {
  consumerName: string;
  group: string;
  ttlMs: number;
  reconcileIntervalMs: number;
  reconcilePageRows: number;
  reseedIntervalMs: number;
  maxContactAgeMs: number;
  maxSeedAgeMs: number;
  blockMs: number;
  batchSize: number;
  claimIdleMs: number;
  maxDeliveries: number;
  reportAppliedIpc: boolean;
}

export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): RevocationConfig {
  const problems = new ConfigProblems();
  const parsed = problems.check(() => loadEnv(envSchema, env));
  const mode = caracalModeOf(env);
  const signing = problems.check(() => streamSigningFromEnv(env, mode));
  if (parsed !== undefined && parsed.REVOCATION_BLOCK_MS >= parsed.REVOCATION_MAX_CONTACT_AGE_MS) {
    problems.add("REVOCATION_BLOCK_MS: must be below REVOCATION_MAX_CONTACT_AGE_MS (an idle stream would read as stale)");
  }
  if (!problems.empty || parsed === undefined || signing === undefined) throw problems.error();
  const e = parsed;
  return {
    ...caracalServiceSettings(e, mode, signing),
    consumerName: e.HOSTNAME,
    group: e.REVOCATION_GROUP,
    ttlMs: e.REVOCATION_TTL_MS,
    reconcileIntervalMs: e.REVOCATION_RECONCILE_INTERVAL_MS,
    reconcilePageRows: e.REVOCATION_RECONCILE_PAGE_ROWS,
    reseedIntervalMs: e.REVOCATION_RESEED_INTERVAL_MS,
    maxContactAgeMs: e.REVOCATION_MAX_CONTACT_AGE_MS,
    maxSeedAgeMs: e.REVOCATION_MAX_SEED_AGE_MS,
    blockMs: e.REVOCATION_BLOCK_MS,
    batchSize: e.REVOCATION_BATCH_SIZE,
    claimIdleMs: e.REVOCATION_CLAIM_IDLE_MS,
    maxDeliveries: e.REVOCATION_MAX_DELIVERIES,
    reportAppliedIpc: e.REVOCATION_REPORT_APPLIED_IPC,
  };
}

/** Settings fit for the start-up log: no URL passwords, no keys. */
export function describeConfig(c: RevocationConfig): Record<string, unknown> {
  return {
    port: c.port,
    database: redactUrl(c.databaseUrl),
    redis: redactUrl(c.redisUrl),
    mode: c.mode,
    streamsKeySet: c.signing.signer !== undefined,
    consumer: c.consumerName,
    group: c.group,
    keyPrefix: c.keyPrefix,
    ttlMs: c.ttlMs,
    reconcileIntervalMs: c.reconcileIntervalMs,
    reseedIntervalMs: c.reseedIntervalMs,
    maxContactAgeMs: c.maxContactAgeMs,
    maxSeedAgeMs: c.maxSeedAgeMs,
    blockMs: c.blockMs,
    batchSize: c.batchSize,
    maxDeliveries: c.maxDeliveries,
  };
}
