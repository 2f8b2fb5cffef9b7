/**
 * The traffic generator's settings: the only reader of the environment. Every bad variable is named in
 * one ConfigError; values are never echoed (a bad value may be a key).
 */
import { parseHmacKey } from "@caracal/streams-core";
import type { CaracalServiceSettings } from "@caracal/service-kit";
import { ConfigProblems, caracalModeOf, caracalServiceEnv, caracalServiceSettings, intVar, loadEnv, streamSigningFromEnv } from "@caracal/service-kit";
import { z } from "zod";

import { parseTamperKinds } from "./tamper.js";
import type { TamperKind } from "./tamper.js";

/** A non-negative rate in events per second (fractions allowed: 0.5 is one every two seconds). */
const rateVar = (defaultValue: number) =>
  z.coerce
    .number({ message: "must be a number" })
    .min(0, { message: "must be >= 0" })
    .max(100_000, { message: "must be <= 100000" })
    .default(defaultValue);

export const envSchema = z.object({
  ...caracalServiceEnv({ port: 9092 }),
  /** Hex key of the audit frame `sig` (>= 32 bytes). Unset: dev only. */
  AUDIT_HMAC_KEY: z.string().optional(),
  /** Where audit batches Redis refuses are spilled and replayed from. Unset: held in memory. */
  AUDIT_REPLAY_DIR: z.string().optional(),
  /** Audit events per second. Default 50. */
  TRAFFIC_AUDIT_RATE: rateVar(50),
  /** Outbox rows (revocations, policy invalidations) per second. Default 2. */
  TRAFFIC_OUTBOX_RATE: rateVar(2),
  /** Number of zones the traffic is spread over (`zone-1` ... `zone-N`). Default 3. */
  TRAFFIC_ZONES: intVar(3, { min: 1, max: 10_000 }),
  /** Stop after this long; 0 runs until SIGTERM. Default 0. */
  TRAFFIC_DURATION_MS: intVar(0, { min: 0 }),
  /** Tampering to demonstrate detection (`--tamper`): forge, drop, alter, delete (comma list) or all. Default none. */
  TRAFFIC_TAMPER: z.string().default(""),
  /** Pause between two rounds of tampering. Default 15,000 ms. */
  TRAFFIC_TAMPER_EVERY_MS: intVar(15_000, { min: 100 }),
});

export interface TrafficConfig extends CaracalServiceSettings {
  auditKey: Buffer | undefined;
  replayDir: string | undefined;
  auditRate: number;
  outboxRate: number;
  zones: string[];
  durationMs: number;
  tamper: TamperKind[];
  tamperEveryMs: number;
}

/** Parses and validates the environment; throws one ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): TrafficConfig {
  const problems = new ConfigProblems();
  const parsed = problems.check(() => loadEnv(envSchema, env));
  const mode = caracalModeOf(env);
  const auditKeyHex = env.AUDIT_HMAC_KEY;
  let auditKey: Buffer | undefined;
  if (auditKeyHex !== undefined && auditKeyHex !== "") auditKey = problems.check(() => parseHmacKey(auditKeyHex, "AUDIT_HMAC_KEY"));
  else if (mode !== "dev") problems.add(`AUDIT_HMAC_KEY: required when CARACAL_MODE=${mode}`);
  const signing = problems.check(() => streamSigningFromEnv(env, mode));
  const tamper = problems.check(() => {
    try {
      return parseTamperKinds(env.TRAFFIC_TAMPER);
    } catch (error) {
      throw new Error(`TRAFFIC_TAMPER: ${(error as Error).message}`);
    }
  });
  if (!problems.empty || parsed === undefined || signing === undefined || tamper === undefined) throw problems.error();
  const e = parsed;
  return {
    ...caracalServiceSettings(e, mode, signing),
    auditKey,
    replayDir: e.AUDIT_REPLAY_DIR,
    auditRate: e.TRAFFIC_AUDIT_RATE,
    outboxRate: e.TRAFFIC_OUTBOX_RATE,
    zones: Array.from({ length: e.TRAFFIC_ZONES }, (_, i) => `zone-${i + 1}`),
    durationMs: e.TRAFFIC_DURATION_MS,
    tamper,
    tamperEveryMs: e.TRAFFIC_TAMPER_EVERY_MS,
  };
}

/** Settings fit for the start-up log: no key material, no URL passwords. */
export function describeConfig(c: TrafficConfig): Record<string, unknown> {
  const strip = (url: string) => url.replace(/:\/\/([^:/@]*):[^@/]*@/, "://$1:[redacted]@");
  const { databaseUrl, redisUrl, auditKey, signing, zones, ...rest } = c;
  return {
    ...rest,
    zones: zones.length,
    database: strip(databaseUrl),
    redis: strip(redisUrl),
    auditKeySet: auditKey !== undefined,
    streamsKeySet: signing.signer !== undefined,
  };
}
