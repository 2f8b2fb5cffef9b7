/**
 * The audit ingestor's settings: the only reader of the environment. Seed 002 "Configuration" with its
 * defaults, plus the settings this project adds. Every bad variable is named in one ConfigError; values
 * are never echoed (a bad value may be a key).
 */
import { availableParallelism } from "node:os";

import { ConfigError, parseHmacKey } from "@caracal/streams-core";
import type { CaracalServiceSettings } from "@caracal/service-kit";
import { ConfigProblems, caracalModeOf, caracalServiceEnv, redactUrl, caracalServiceSettings, databaseUrlVar, intVar, loadEnv, streamSigningFromEnv } from "@caracal/service-kit";
import { z } from "zod";

import { readinessLimitsFrom, readinessLimitsSchema } from "./api/readiness-limits.js";
import type { ReadinessLimits } from "./api/readiness-limits.js";

import type { ExportS3Config } from "./export/config-schema.js";
import { exportConfigSchema, exportS3ConfigFrom } from "./export/config-schema.js";
import { retentionConfigSchema } from "./retention/config-schema.js";

/** A hex key checked by the strict decoder (WIRE §3); the issue names the problem, never the value. */
const hexKeyVar = () =>
  z
    .string()
    .optional()
    .superRefine((value, ctx) => {
      if (value === undefined) return;
      try {
        parseHmacKey(value, "key");
      } catch (error) {
        const problem = error instanceof ConfigError ? (error.problems[0] ?? "invalid key") : "invalid key";
        ctx.addIssue({ code: "custom", message: problem.replace(/^key: /, "") });
      }
    });

/**
 * The whole environment: this file's variables plus the export and retention fragments (AUDIT_EXPORT_S3_*,
 * AUDIT_EXPORT_*, AUDIT_LEADER_LEASE_TTL_MS, AUDIT_RETENTION_DAYS 365, AUDIT_RETENTION_INTERVAL_MS,
 * AUDIT_MAX_DELIVERIES 5: deliveries after which a failing write goes to audit_events_dlq).
 */
export const envSchema = z.object({
  ...caracalServiceEnv({ port: 9090 }),
  ...exportConfigSchema.shape,
  ...retentionConfigSchema.shape,
  ...readinessLimitsSchema.shape,
  /** Token of the operator routes `/api/audit/*` (upstream's). Unset: the routes answer 404. */
  AUDIT_ADMIN_TOKEN: z.string().min(16, { message: "must be at least 16 characters" }).optional(),
  /** Hex key of the frame `sig` and of `hmac_chain` (>= 32 bytes). Unset: dev only, with a warning. */
  AUDIT_HMAC_KEY: hexKeyVar(),
  /** Consumer name, unique per replica. Default audit-worker-0. */
  HOSTNAME: z.string().min(1).default("audit-worker-0"),
  /** Pending entries idle this long are reclaimed (XAUTOCLAIM), checked this often. Default 30 s. */
  AUDIT_CLAIM_IDLE_SECS: intVar(30, { min: 1 }),
  /** Window of the tamper sweep. Default 4 h. */
  AUDIT_TAMPER_ROLLING_HOURS: intVar(4, { min: 1 }),
  /** How often the tamper sweep runs. Default 3,600,000 ms (1 h). */
  AUDIT_TAMPER_SWEEP_INTERVAL_MS: intVar(3_600_000, { min: 1000 }),
  /** A producer-chain gap younger than this may still be redelivered: not reported yet. Default 10 min. */
  AUDIT_GAP_GRACE_MS: intVar(600_000, { min: 0 }),
  /** Entries per XREADGROUP and per ledger transaction. Default 100. */
  AUDIT_BATCH_SIZE: intVar(100, { min: 1, max: 10_000 }),
  /**
   * Batches handled at once; batches waiting for the ledger are merged into one transaction (group commit).
   * Default 16: with fewer, the reader stalls while a transaction commits; `pnpm bench:audit` measures
   * the effect of a setting.
   */
  AUDIT_CONCURRENCY: intVar(16, { min: 1, max: 64 }),
  /**
   * Worker threads that verify and hash entries (frame sig, JSON, schema, content_sha256, COPY text) while
   * the main thread reads, writes the ledger and acks; 0 verifies on the main thread. Default 1 where
   * there are at least 2 CPUs, else 0. Each worker costs its own heap; more workers pay off only where the
   * ingestor has more cores (`pnpm bench:audit` with AUDIT_VERIFY_WORKERS set measures both).
   */
  AUDIT_VERIFY_WORKERS: intVar(availableParallelism() >= 2 ? 1 : 0, { min: 0, max: 64 }),
  /**
   * Bound on the bytes of stream entries read and not yet stored and acknowledged (read-ahead and batches in
   * flight together); the reader waits at the bound and reads fewer entries per XREADGROUP when entries
   * are large, but always reads when nothing is in flight. Memory then follows this setting instead of
   * frame size times AUDIT_BATCH_SIZE times AUDIT_CONCURRENCY. Each byte in flight costs several in the
   * process (the verify worker's copy, the parsed event, the COPY text, garbage not yet collected), hence a
   * default below the engine's 64 MiB; ordinary events stay far under it at any batch size and concurrency.
   * Default 16,777,216 (16 MiB); `pnpm bench:audit-memory` measures the peak RSS over large frames.
   */
  AUDIT_MAX_INFLIGHT_BYTES: intVar(16 * 1024 * 1024, { min: 1024 }),
  /** The audit publisher's spill directory, replayed at start. Unset: no replay. */
  AUDIT_REPLAY_DIR: z.string().optional(),
});

export interface AuditConfig extends CaracalServiceSettings {
  auditKey: Buffer | undefined;
  consumerName: string;
  batchSize: number;
  concurrency: number;
  verifyWorkers: number;
  maxInFlightBytes: number;
  maxDeliveries: number;
  claimIdleMs: number;
  sweep: { rollingHours: number; intervalMs: number; gapGraceMs: number };
  replayDir: string | undefined;
  /** Undefined when export is off. */
  export: { s3: ExportS3Config; intervalMs: number; settleMs: number; pageRows: number } | undefined;
  leaderLeaseTtlMs: number;
  retention: { days: number; intervalMs: number };
  /** AUDIT_ADMIN_TOKEN; undefined turns the operator routes off. */
  adminToken: string | undefined;
  /** AUDIT_READY_DLQ_MAX, AUDIT_READY_LAG_MAX, AUDIT_READY_PEL_OLDEST_SECS_MAX (0: off). */
  readinessLimits: ReadinessLimits;
}

/** Parses and validates the environment; throws one ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): AuditConfig {
  const problems = new ConfigProblems();
  const parsed = problems.check(() => loadEnv(envSchema, env));
  const set = (name: string) => env[name] !== undefined && env[name] !== "";
  const mode = caracalModeOf(env);
  if (mode !== "dev" && !set("AUDIT_HMAC_KEY")) problems.add(`AUDIT_HMAC_KEY: required when CARACAL_MODE=${mode}`);
  if (set("AUDIT_EXPORT_S3_ENDPOINT") !== set("AUDIT_EXPORT_S3_BUCKET")) {
    problems.add(`${set("AUDIT_EXPORT_S3_ENDPOINT") ? "AUDIT_EXPORT_S3_BUCKET" : "AUDIT_EXPORT_S3_ENDPOINT"}: required when the other S3 export setting is set`);
  }
  const signing = problems.check(() => streamSigningFromEnv(env, mode));
  if (!problems.empty || parsed === undefined || signing === undefined) throw problems.error();
  const e = parsed;
  return {
    ...caracalServiceSettings(e, mode, signing),
    auditKey: e.AUDIT_HMAC_KEY === undefined ? undefined : parseHmacKey(e.AUDIT_HMAC_KEY, "AUDIT_HMAC_KEY"),
    consumerName: e.HOSTNAME,
    batchSize: e.AUDIT_BATCH_SIZE,
    concurrency: e.AUDIT_CONCURRENCY,
    verifyWorkers: e.AUDIT_VERIFY_WORKERS,
    maxInFlightBytes: e.AUDIT_MAX_INFLIGHT_BYTES,
    maxDeliveries: e.AUDIT_MAX_DELIVERIES,
    claimIdleMs: e.AUDIT_CLAIM_IDLE_SECS * 1000,
    sweep: { rollingHours: e.AUDIT_TAMPER_ROLLING_HOURS, intervalMs: e.AUDIT_TAMPER_SWEEP_INTERVAL_MS, gapGraceMs: e.AUDIT_GAP_GRACE_MS },
    replayDir: e.AUDIT_REPLAY_DIR,
    export: exportOf(e),
    leaderLeaseTtlMs: e.AUDIT_LEADER_LEASE_TTL_MS,
    retention: { days: e.AUDIT_RETENTION_DAYS, intervalMs: e.AUDIT_RETENTION_INTERVAL_MS },
    adminToken: e.AUDIT_ADMIN_TOKEN,
    readinessLimits: readinessLimitsFrom(e),
  };
}

function exportOf(e: z.output<typeof envSchema>): AuditConfig["export"] {
  const s3 = exportS3ConfigFrom(e);
  if (s3 === undefined) return undefined;
  return { s3, intervalMs: e.AUDIT_EXPORT_INTERVAL_MS, settleMs: e.AUDIT_EXPORT_SETTLE_MS, pageRows: e.AUDIT_EXPORT_PAGE_ROWS };
}

/** Settings fit for the start-up log: no key material, no URL passwords. */
export function describeConfig(c: AuditConfig): Record<string, unknown> {
  return {
    port: c.port,
    database: redactUrl(c.databaseUrl),
    redis: redactUrl(c.redisUrl),
    mode: c.mode,
    auditKeySet: c.auditKey !== undefined,
    streamsKeySet: c.signing.signer !== undefined,
    consumer: c.consumerName,
    keyPrefix: c.keyPrefix,
    batchSize: c.batchSize,
    concurrency: c.concurrency,
    verifyWorkers: c.verifyWorkers,
    maxInFlightBytes: c.maxInFlightBytes,
    maxDeliveries: c.maxDeliveries,
    claimIdleMs: c.claimIdleMs,
    sweep: c.sweep,
    replayDir: c.replayDir,
    export: c.export === undefined ? "off" : { endpoint: c.export.s3.endpoint, bucket: c.export.s3.bucket, region: c.export.s3.region, intervalMs: c.export.intervalMs },
    retention: c.retention,
    adminRoutes: c.adminToken === undefined ? "off" : "on",
    readinessLimits: c.readinessLimits,
  };
}

export const verifyEnvSchema = z.object({
  DATABASE_URL: databaseUrlVar(),
  AUDIT_HMAC_KEY: hexKeyVar(),
  AUDIT_GAP_GRACE_MS: intVar(600_000, { min: 0 }),
});

export interface VerifyConfig {
  databaseUrl: string;
  auditKey: Buffer | undefined;
  gapGraceMs: number;
}

/** Settings of the `verify` command: the database and the chain key only. */
export function loadVerifyConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): VerifyConfig {
  const e = loadEnv(verifyEnvSchema, env);
  return {
    databaseUrl: e.DATABASE_URL,
    auditKey: e.AUDIT_HMAC_KEY === undefined ? undefined : parseHmacKey(e.AUDIT_HMAC_KEY, "AUDIT_HMAC_KEY"),
    gapGraceMs: e.AUDIT_GAP_GRACE_MS,
  };
}
