/**
 * The audit ingestor's settings: the only reader of the environment. Seed 002 "Configuration" with its
 * defaults, plus the settings this project adds. Every bad variable is named in one ConfigError; values
 * are never echoed (a bad value may be a key).
 */
import type { CaracalMode, SignaturePolicy } from "@caracal/streams-core";
import { ConfigError, parseHmacKey, signaturePolicy } from "@caracal/streams-core";
import { databaseUrlVar, intVar, loadEnv, modeVar, redisUrlVar, urlVar } from "@caracal/service-kit";
import { z } from "zod";

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

export const envSchema = z.object({
  /** HTTP port of /healthz, /readyz, /metrics. Default 9090. */
  PORT: intVar(9090, { min: 0, max: 65535 }),
  DATABASE_URL: databaseUrlVar(),
  REDIS_URL: redisUrlVar(),
  /** dev, rc or stable (default). rc/stable require AUDIT_HMAC_KEY and STREAMS_HMAC_KEY. */
  CARACAL_MODE: modeVar(),
  /** Hex key of the frame `sig` and of `hmac_chain` (>= 32 bytes). Unset: dev only, with a warning. */
  AUDIT_HMAC_KEY: hexKeyVar(),
  /** Hex key of `_sig` (WIRE §3), and previous keys still accepted (comma-separated). */
  STREAMS_HMAC_KEY: hexKeyVar(),
  STREAMS_HMAC_KEYS_PREVIOUS: z.string().optional(),
  /** Consumer name, unique per replica. Default audit-worker-0. */
  HOSTNAME: z.string().min(1).default("audit-worker-0"),
  /** S3 export (another module): on when endpoint and bucket are set. */
  AUDIT_EXPORT_S3_ENDPOINT: urlVar(["http:", "https:"]).optional(),
  AUDIT_EXPORT_S3_BUCKET: z.string().optional(),
  AUDIT_EXPORT_S3_REGION: z.string().min(1).default("us-east-1"),
  /** Rows older than this many days are deleted by the retention leader. Default 365. */
  AUDIT_RETENTION_DAYS: intVar(365, { min: 1 }),
  /** How often retention runs. Default 3,600,000 ms (1 h). */
  AUDIT_RETENTION_INTERVAL_MS: intVar(3_600_000, { min: 1000 }),
  /** Deliveries after which a write that keeps failing goes to audit_events_dlq. Default 5. */
  AUDIT_MAX_DELIVERIES: intVar(5, { min: 1 }),
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
  /** Batches handled at once; batches waiting for the ledger are merged into one transaction. Default 4. */
  AUDIT_CONCURRENCY: intVar(4, { min: 1, max: 64 }),
  /** The audit publisher's spill directory, replayed at start. Unset: no replay. */
  AUDIT_REPLAY_DIR: z.string().optional(),
  /** Prefix of every Redis key (tests, tenants sharing one Redis). Default "". */
  CARACAL_KEY_PREFIX: z.string().default(""),
  /** Grace time to finish in-flight batches on SIGTERM. Default 10,000 ms. */
  CARACAL_SHUTDOWN_GRACE_MS: intVar(10_000, { min: 0 }),
});

export interface AuditConfig {
  port: number;
  databaseUrl: string;
  redisUrl: string;
  mode: CaracalMode;
  auditKey: Buffer | undefined;
  signing: SignaturePolicy;
  consumerName: string;
  keyPrefix: string;
  batchSize: number;
  concurrency: number;
  maxDeliveries: number;
  claimIdleMs: number;
  sweep: { rollingHours: number; intervalMs: number; gapGraceMs: number };
  replayDir: string | undefined;
  /** Undefined when export is off. */
  export: { endpoint: string; bucket: string; region: string } | undefined;
  retention: { days: number; intervalMs: number };
  shutdownGraceMs: number;
}

/** Parses and validates the environment; throws one ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): AuditConfig {
  const problems: string[] = [];
  let parsed: z.output<typeof envSchema> | undefined;
  try {
    parsed = loadEnv(envSchema, env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems);
  }
  const set = (name: string) => env[name] !== undefined && env[name] !== "";
  const mode = (env.CARACAL_MODE && ["dev", "rc", "stable"].includes(env.CARACAL_MODE) ? env.CARACAL_MODE : "stable") as CaracalMode;
  if (mode !== "dev" && !set("AUDIT_HMAC_KEY")) problems.push(`AUDIT_HMAC_KEY: required when CARACAL_MODE=${mode}`);
  if (mode !== "dev" && !set("STREAMS_HMAC_KEY")) problems.push(`STREAMS_HMAC_KEY: required when CARACAL_MODE=${mode}`);
  if (set("AUDIT_EXPORT_S3_ENDPOINT") !== set("AUDIT_EXPORT_S3_BUCKET")) {
    problems.push(`${set("AUDIT_EXPORT_S3_ENDPOINT") ? "AUDIT_EXPORT_S3_BUCKET" : "AUDIT_EXPORT_S3_ENDPOINT"}: required when the other S3 export setting is set`);
  }
  let signing: SignaturePolicy | undefined;
  if (parsed !== undefined) {
    try {
      signing = signaturePolicy({ mode, keyHex: parsed.STREAMS_HMAC_KEY, previousKeysHex: parsed.STREAMS_HMAC_KEYS_PREVIOUS });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      for (const p of error.problems) if (!problems.includes(p)) problems.push(p);
    }
  }
  if (problems.length > 0 || parsed === undefined || signing === undefined) throw new ConfigError(problems);
  const e = parsed;
  return {
    port: e.PORT,
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    mode,
    auditKey: e.AUDIT_HMAC_KEY === undefined ? undefined : parseHmacKey(e.AUDIT_HMAC_KEY, "AUDIT_HMAC_KEY"),
    signing,
    consumerName: e.HOSTNAME,
    keyPrefix: e.CARACAL_KEY_PREFIX,
    batchSize: e.AUDIT_BATCH_SIZE,
    concurrency: e.AUDIT_CONCURRENCY,
    maxDeliveries: e.AUDIT_MAX_DELIVERIES,
    claimIdleMs: e.AUDIT_CLAIM_IDLE_SECS * 1000,
    sweep: { rollingHours: e.AUDIT_TAMPER_ROLLING_HOURS, intervalMs: e.AUDIT_TAMPER_SWEEP_INTERVAL_MS, gapGraceMs: e.AUDIT_GAP_GRACE_MS },
    replayDir: e.AUDIT_REPLAY_DIR,
    export:
      e.AUDIT_EXPORT_S3_ENDPOINT !== undefined && e.AUDIT_EXPORT_S3_BUCKET !== undefined
        ? { endpoint: e.AUDIT_EXPORT_S3_ENDPOINT, bucket: e.AUDIT_EXPORT_S3_BUCKET, region: e.AUDIT_EXPORT_S3_REGION }
        : undefined,
    retention: { days: e.AUDIT_RETENTION_DAYS, intervalMs: e.AUDIT_RETENTION_INTERVAL_MS },
    shutdownGraceMs: e.CARACAL_SHUTDOWN_GRACE_MS,
  };
}

/** Settings fit for the start-up log: no key material, no URL passwords. */
export function describeConfig(c: AuditConfig): Record<string, unknown> {
  const strip = (url: string) => url.replace(/:\/\/([^:/@]*):[^@/]*@/, "://$1:[redacted]@");
  return {
    port: c.port,
    database: strip(c.databaseUrl),
    redis: strip(c.redisUrl),
    mode: c.mode,
    auditKeySet: c.auditKey !== undefined,
    streamsKeySet: c.signing.signer !== undefined,
    consumer: c.consumerName,
    keyPrefix: c.keyPrefix,
    batchSize: c.batchSize,
    concurrency: c.concurrency,
    maxDeliveries: c.maxDeliveries,
    claimIdleMs: c.claimIdleMs,
    sweep: c.sweep,
    replayDir: c.replayDir,
    export: c.export,
    retention: c.retention,
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
