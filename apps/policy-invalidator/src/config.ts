/**
 * The policy invalidator's settings: the only reader of the environment. Every bad variable is named in
 * one ConfigError; values are never echoed (the signing key is a secret).
 */
import type { CaracalServiceSettings } from "@caracal/service-kit";
import { ConfigProblems, caracalModeOf, caracalServiceEnv, caracalServiceSettings, describeSettings, intVar, loadEnv, streamSigningFromEnv } from "@caracal/service-kit";
import { z } from "zod";

export const SIGNING_ALGS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "HS256", "HS384", "HS512"] as const;

export const envSchema = z.object({
  ...caracalServiceEnv({ port: 9094, dbMaxConns: 5 }),
  /** How often every zone is re-read from PostgreSQL, repairing what a lost message missed. Default 30,000 ms. */
  POLICY_RECONCILE_INTERVAL_MS: intVar(30_000, { min: 100 }),
  /** Longest `Prefer: wait` honoured by a bundle long poll. Default 300,000 ms (below Node's request timeout). */
  POLICY_LONG_POLL_MAX_MS: intVar(280_000, { min: 0, max: 290_000 }),
  /** PEM private key (RS*, PS*, ES*) or shared secret (HS*) that signs bundles; unset: bundles are unsigned. */
  POLICY_BUNDLE_SIGNING_KEY: z.string().optional(),
  POLICY_BUNDLE_SIGNING_ALG: z.enum(SIGNING_ALGS, { message: `must be one of ${SIGNING_ALGS.join(", ")}` }).default("RS256"),
  /** `kid` of the signature; OPA's `keys.<id>` that verifies it. Default caracal-bundles. */
  POLICY_BUNDLE_SIGNING_KEY_ID: z.string().min(1).default("caracal-bundles"),
  /** Optional `scope` claim; OPA then requires the same scope in its signing config. */
  POLICY_BUNDLE_SIGNING_SCOPE: z.string().optional(),
  HOSTNAME: z.string().min(1).default("policy-invalidator"),
});

export interface PolicyConfig extends CaracalServiceSettings {
  reconcileIntervalMs: number;
  longPollMaxMs: number;
  bundleSigning: { key: string; alg: (typeof SIGNING_ALGS)[number]; keyId: string; scope: string | undefined } | undefined;
  hostname: string;
}

export function loadConfig(env: NodeJS.ProcessEnv | Record<string, string | undefined>): PolicyConfig {
  const problems = new ConfigProblems();
  const parsed = problems.check(() => loadEnv(envSchema, env));
  const mode = caracalModeOf(env);
  const signing = problems.check(() => streamSigningFromEnv(env, mode));
  if (parsed?.POLICY_BUNDLE_SIGNING_KEY !== undefined && !parsed.POLICY_BUNDLE_SIGNING_ALG.startsWith("HS") && !parsed.POLICY_BUNDLE_SIGNING_KEY.includes("PRIVATE KEY")) {
    problems.add("POLICY_BUNDLE_SIGNING_KEY: must be a PEM (PKCS#8) private key for this POLICY_BUNDLE_SIGNING_ALG");
  }
  if (parsed?.POLICY_BUNDLE_SIGNING_KEY !== undefined && parsed.POLICY_BUNDLE_SIGNING_ALG.startsWith("HS") && parsed.POLICY_BUNDLE_SIGNING_KEY.length < 32) {
    problems.add("POLICY_BUNDLE_SIGNING_KEY: an HS* secret must be at least 32 characters");
  }
  if (!problems.empty || parsed === undefined || signing === undefined) throw problems.error();
  const e = parsed;
  return {
    ...caracalServiceSettings(e, mode, signing),
    reconcileIntervalMs: e.POLICY_RECONCILE_INTERVAL_MS,
    longPollMaxMs: e.POLICY_LONG_POLL_MAX_MS,
    bundleSigning:
      e.POLICY_BUNDLE_SIGNING_KEY === undefined
        ? undefined
        : { key: e.POLICY_BUNDLE_SIGNING_KEY, alg: e.POLICY_BUNDLE_SIGNING_ALG, keyId: e.POLICY_BUNDLE_SIGNING_KEY_ID, scope: e.POLICY_BUNDLE_SIGNING_SCOPE },
    hostname: e.HOSTNAME,
  };
}

export function describeConfig(c: PolicyConfig): Record<string, unknown> {
  return describeSettings(c) as Record<string, unknown>;
}
