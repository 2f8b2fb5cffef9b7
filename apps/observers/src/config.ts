/**
 * The observers' settings: the only reader of the environment. Every bad variable is named in one
 * ConfigError; values are never echoed.
 */
import type { CaracalServiceSettings } from "@caracal/service-kit";
import { ConfigProblems, boolVar, caracalModeOf, caracalServiceEnv, caracalServiceSettings, intVar, loadEnv, streamSigningFromEnv } from "@caracal/service-kit";
import { describeSiemExportConfig, loadSiemExportConfig } from "@caracal/siem-export";
import type { SiemExportConfig } from "@caracal/siem-export";
import { parseHmacKey } from "@caracal/streams-core";
import { z } from "zod";

export const envSchema = z.object({
  ...caracalServiceEnv({ port: 9095 }),
  /** Consumer name, unique per replica. Default observers-0. */
  HOSTNAME: z.string().min(1).default("observers-0"),
  /** Consumer of caracal.agents.lifecycle (group coordinator-relay). Default on. */
  OBSERVERS_AGENTS_LIFECYCLE: boolVar(true),
  /** Consumer of caracal.invocations.lifecycle (group invocations-observer). Default on. */
  OBSERVERS_INVOCATIONS: boolVar(true),
  /** Consumer of caracal.delegations.invalidate (group delegations-observer). Default on. */
  OBSERVERS_DELEGATIONS: boolVar(true),
  /** Consumer of caracal.audit.events.dlq (group audit-dlq-observer). Default on. */
  OBSERVERS_AUDIT_DLQ: boolVar(true),
  /** Watch of every `{stream}.dead` stream (length, oldest age, reasons). Default on. */
  OBSERVERS_DEAD_LETTERS: boolVar(true),
  /** How often dead-letter streams are measured. Default 15,000 ms. */
  OBSERVERS_DEAD_LETTER_INTERVAL_MS: intVar(15_000, { min: 100 }),
  /** Recent events kept per stream in observed_events. Default 10,000. */
  OBSERVERS_RECENT_EVENTS_PER_STREAM: intVar(10_000, { min: 1, max: 10_000_000 }),
  /** Distinct zone label values per metric; further zones are counted under zone="other". Default 100. */
  OBSERVERS_METRIC_ZONES_MAX: intVar(100, { min: 0, max: 100_000 }),
  /** Entries per XREADGROUP (and per PostgreSQL transaction). Default 200. */
  OBSERVERS_BATCH_SIZE: intVar(200, { min: 1, max: 10_000 }),
  /** Pending entries idle this long are reclaimed from a crashed replica. Default 30,000 ms. */
  OBSERVERS_CLAIM_IDLE_MS: intVar(30_000, { min: 100 }),
  /** Deliveries after which a failing entry is dead-lettered. Default 5. */
  OBSERVERS_MAX_DELIVERIES: intVar(5, { min: 1, max: 1000 }),
  /** Hex key of the audit frame `sig`, checked by the SIEM export as the audit ingestor checks it. */
  AUDIT_HMAC_KEY: z.string().optional(),
});

export interface ObserversConfig extends CaracalServiceSettings {
  consumerName: string;
  enabled: { agents: boolean; invocations: boolean; delegations: boolean; auditDlq: boolean; deadLetters: boolean };
  deadLetterIntervalMs: number;
  recentEventsPerStream: number;
  metricZonesMax: number;
  batchSize: number;
  claimIdleMs: number;
  maxDeliveries: number;
  /** The SIEM export (group siem-export), on when a sink is configured (`SIEM_*`, @caracal/siem-export). */
  siem: SiemExportConfig | undefined;
  auditKey: Buffer | undefined;
}

/** Parses and validates the environment; throws one ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): ObserversConfig {
  const problems = new ConfigProblems();
  const parsed = problems.check(() => loadEnv(envSchema, env));
  const mode = caracalModeOf(env);
  const signing = problems.check(() => streamSigningFromEnv(env, mode));
  const siem = problems.check(() => loadSiemExportConfig(env) ?? null);
  const auditKeyHex = env.AUDIT_HMAC_KEY;
  let auditKey: Buffer | undefined;
  if (auditKeyHex !== undefined && auditKeyHex !== "") auditKey = problems.check(() => parseHmacKey(auditKeyHex, "AUDIT_HMAC_KEY"));
  else if (siem && mode !== "dev") problems.add(`AUDIT_HMAC_KEY: required by the SIEM export when CARACAL_MODE=${mode}`);
  if (!problems.empty || parsed === undefined || signing === undefined || siem === undefined) throw problems.error();
  const e = parsed;
  return {
    ...caracalServiceSettings(e, mode, signing),
    consumerName: e.HOSTNAME,
    enabled: {
      agents: e.OBSERVERS_AGENTS_LIFECYCLE,
      invocations: e.OBSERVERS_INVOCATIONS,
      delegations: e.OBSERVERS_DELEGATIONS,
      auditDlq: e.OBSERVERS_AUDIT_DLQ,
      deadLetters: e.OBSERVERS_DEAD_LETTERS,
    },
    deadLetterIntervalMs: e.OBSERVERS_DEAD_LETTER_INTERVAL_MS,
    recentEventsPerStream: e.OBSERVERS_RECENT_EVENTS_PER_STREAM,
    metricZonesMax: e.OBSERVERS_METRIC_ZONES_MAX,
    batchSize: e.OBSERVERS_BATCH_SIZE,
    claimIdleMs: e.OBSERVERS_CLAIM_IDLE_MS,
    maxDeliveries: e.OBSERVERS_MAX_DELIVERIES,
    siem: siem ?? undefined,
    auditKey,
  };
}

/** Settings fit for the start-up log: no key material, no URL passwords. */
export function describeConfig(c: ObserversConfig): Record<string, unknown> {
  const strip = (url: string) => url.replace(/:\/\/([^:/@]*):[^@/]*@/, "://$1:[redacted]@");
  return {
    port: c.port,
    database: strip(c.databaseUrl),
    redis: strip(c.redisUrl),
    mode: c.mode,
    streamsKeySet: c.signing.signer !== undefined,
    consumer: c.consumerName,
    keyPrefix: c.keyPrefix,
    enabled: c.enabled,
    batchSize: c.batchSize,
    recentEventsPerStream: c.recentEventsPerStream,
    siemExport: describeSiemExportConfig(c.siem),
    auditKeySet: c.auditKey !== undefined,
  };
}
