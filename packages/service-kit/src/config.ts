/**
 * Environment parsing: one zod schema per service, validated at once; every bad variable is named in
 * one ConfigError. Values are never echoed back (a bad value may be a secret).
 */
import type { CaracalMode, SignaturePolicy } from "@caracal/streams-core";
import { CARACAL_MODES, ConfigError, signaturePolicy } from "@caracal/streams-core";
import { z } from "zod";

import { resolveSecretFiles } from "./secrets.js";

export function loadEnv<S extends z.ZodObject>(schema: S, env: NodeJS.ProcessEnv | Record<string, string | undefined>): z.output<S> {
  // Empty strings mean "unset", as in shell `VAR= cmd` and compose files. Secrets may come from files.
  const cleaned: Record<string, string> = {};
  for (const [k, v] of Object.entries(resolveSecretFiles(env))) if (v !== undefined && v !== "") cleaned[k] = v;
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => {
        const name = i.path.join(".") || "(env)";
        // zod's wording for an absent variable; say it plainly
        return i.code === "invalid_type" && /received undefined/.test(i.message) ? `${name}: required` : `${name}: ${i.message}`;
      }),
    );
  }
  return result.data;
}

/** An integer variable with a default and bounds. */
export function intVar(defaultValue: number, bounds: { min?: number; max?: number } = {}) {
  let s = z.coerce.number({ message: "must be a number" }).int({ message: "must be a whole number" });
  if (bounds.min !== undefined) s = s.min(bounds.min, { message: `must be >= ${bounds.min}` });
  if (bounds.max !== undefined) s = s.max(bounds.max, { message: `must be <= ${bounds.max}` });
  return s.default(defaultValue);
}

export const modeVar = () => z.enum(["dev", "rc", "stable"], { message: "must be dev, rc or stable" }).default("stable");

/**
 * A URL with one of `protocols` (`"redis:"` form). A `redis-cluster://h:p,h:p` URL lists several hosts,
 * which WHATWG URL cannot parse: only its scheme and a non-empty rest are checked here, each node by
 * `connectRedis`.
 */
export const urlVar = (protocols: readonly string[]) =>
  z.string().refine((v) => {
    const scheme = /^([a-z][a-z0-9+.-]*:)\/\/\S/i.exec(v)?.[1]?.toLowerCase();
    if (scheme === undefined || !protocols.includes(scheme)) return false;
    if (scheme === "redis-cluster:") return true;
    try {
      return protocols.includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, `must be a URL with scheme ${protocols.map((p) => p.replace(/:$/, "://")).join(" or ")}`);

export const redisUrlVar = () => urlVar(["redis:", "rediss:", "redis-cluster:"]);
export const databaseUrlVar = () => urlVar(["postgres:", "postgresql:"]);

export const boolVar = (defaultValue: boolean) =>
  z
    .enum(["1", "0", "true", "false", "yes", "no"], { message: "must be true or false" })
    .optional()
    .transform((v) => (v === undefined ? defaultValue : v === "1" || v === "true" || v === "yes"));

type Env = NodeJS.ProcessEnv | Record<string, string | undefined>;

/**
 * Gathers every configuration problem of a service (schema, keys, rules across variables) so that one
 * ConfigError names them all. A check that throws ConfigError is collected; any other error propagates.
 */
export class ConfigProblems {
  private readonly problems: string[] = [];

  /** Runs a check; returns its value, or undefined when it reported problems. */
  check<T>(check: () => T): T | undefined {
    try {
      return check();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      for (const p of error.problems) this.add(p);
      return undefined;
    }
  }

  add(problem: string): void {
    if (!this.problems.includes(problem)) this.problems.push(problem);
  }

  get empty(): boolean {
    return this.problems.length === 0;
  }

  error(): ConfigError {
    return new ConfigError(this.problems);
  }
}

/** CARACAL_MODE, or "stable" when unset or invalid (the service's schema reports an invalid value). */
export function caracalModeOf(env: Env): CaracalMode {
  const mode = env.CARACAL_MODE;
  return mode !== undefined && (CARACAL_MODES as readonly string[]).includes(mode) ? (mode as CaracalMode) : "stable";
}

/** The `_sig` policy from STREAMS_HMAC_KEY and STREAMS_HMAC_KEYS_PREVIOUS; throws ConfigError (WIRE §3). */
export function streamSigningFromEnv(rawEnv: Env, mode: CaracalMode): SignaturePolicy {
  const env = resolveSecretFiles(rawEnv);
  const required = env.STREAMS_SIG2_REQUIRED;
  if (required !== undefined && required !== "" && !["1", "0", "true", "false", "yes", "no"].includes(required)) {
    throw new ConfigError(["STREAMS_SIG2_REQUIRED: must be true or false"]);
  }
  return signaturePolicy({
    mode,
    keyHex: env.STREAMS_HMAC_KEY,
    previousKeysHex: env.STREAMS_HMAC_KEYS_PREVIOUS,
    requireSig2: required === "1" || required === "true" || required === "yes",
  });
}

/** A Go-style duration (`500ms`, `10s`, `5m`, `1h30m`), as upstream's DB_* settings are written, or plain milliseconds. */
export const durationVar = (defaultMs: number) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return defaultMs;
      if (/^\d+$/.test(v)) return Number(v);
      const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
      if (parts.length === 0 || parts.map((p) => p[0]).join("") !== v) {
        ctx.addIssue({ code: "custom", message: "must be a duration such as 500ms, 10s, 5m or 1h30m" });
        return z.NEVER;
      }
      return parts.reduce((ms, p) => ms + Number(p[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[p[2] as "ms" | "s" | "m" | "h"], 0);
    });

/**
 * The variables every Caracal service reads, to spread into its own schema:
 * `PORT` (ops HTTP: /healthz, /readyz, /metrics, and the service's routes) and `OPS_HOST` (its listen
 * address; default 0.0.0.0), `REDIS_URL` (redis://host:port[/db], rediss://, redis-cluster://h:p,h:p),
 * `CARACAL_MODE` (dev, rc, stable; default stable), `STREAMS_HMAC_KEY` / `STREAMS_HMAC_KEYS_PREVIOUS` (the
 * `_sig` keys; checked by `streamSigningFromEnv`), `STREAMS_SIG2_REQUIRED` (reject entries without
 * `_sig2`; default false), `CARACAL_KEY_PREFIX` (prefix of every Redis key, for tests and tenants; not
 * signed; default ""), `CARACAL_SHUTDOWN_GRACE_MS` (graceful stop bound after SIGTERM; default 10,000),
 * `METRICS_BEARER` (when set, /metrics wants `Authorization: Bearer <it>`). With `postgres` (the
 * default): `DATABASE_URL` and the pool settings as upstream names them, `DB_MAX_CONNS` (default: the
 * service's), `DB_MIN_CONNS` (0), `DB_CONNECT_TIMEOUT` (10s), `DB_MAX_CONN_IDLE` (5m),
 * `DB_MAX_CONN_LIFETIME` (30m). Every secret may come from a file: `<NAME>_FILE` (see `secrets.ts`).
 */
export function caracalServiceEnv(defaults: { port: number; dbMaxConns?: number }) {
  return {
    ...caracalServiceEnvWithoutPostgres(defaults),
    DATABASE_URL: databaseUrlVar(),
    DB_MAX_CONNS: intVar(defaults.dbMaxConns ?? 10, { min: 1, max: 1000 }),
    DB_MIN_CONNS: intVar(0, { min: 0, max: 1000 }),
    DB_CONNECT_TIMEOUT: durationVar(10_000),
    DB_MAX_CONN_IDLE: durationVar(300_000),
    DB_MAX_CONN_LIFETIME: durationVar(1_800_000),
  };
}

/** `caracalServiceEnv` for a service that never touches PostgreSQL: no DATABASE_URL, no DB_* settings. */
export function caracalServiceEnvWithoutPostgres(defaults: { port: number }) {
  return {
    PORT: intVar(defaults.port, { min: 0, max: 65535 }),
    OPS_HOST: z.string().min(1).default("0.0.0.0"),
    REDIS_URL: redisUrlVar(),
    CARACAL_MODE: modeVar(),
    STREAMS_HMAC_KEY: z.string().optional(),
    STREAMS_HMAC_KEYS_PREVIOUS: z.string().optional(),
    STREAMS_SIG2_REQUIRED: boolVar(false),
    CARACAL_KEY_PREFIX: z.string().default(""),
    CARACAL_SHUTDOWN_GRACE_MS: intVar(10_000, { min: 0 }),
    METRICS_BEARER: z.string().optional(),
  };
}

/** Pool settings of a service's PostgreSQL connections (`DB_*`, named as upstream names them). */
export interface PostgresPoolSettings {
  maxConnections: number;
  minConnections: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxLifetimeMs: number;
}

/** The settings every Caracal service has, resolved from `caracalServiceEnv` variables. */
export interface CaracalServiceSettings {
  port: number;
  /** Listen address of the ops server (OPS_HOST). */
  host: string;
  /** Undefined for a service without PostgreSQL. */
  databaseUrl: string;
  redisUrl: string;
  mode: CaracalMode;
  signing: SignaturePolicy;
  keyPrefix: string;
  shutdownGraceMs: number;
  metricsBearer: string | undefined;
  db: PostgresPoolSettings;
}

/** Maps the parsed `caracalServiceEnv` variables to their settings; spread into a service's config. */
export function caracalServiceSettings(
  e: {
    PORT: number;
    OPS_HOST?: string;
    DATABASE_URL?: string;
    REDIS_URL: string;
    CARACAL_KEY_PREFIX: string;
    CARACAL_SHUTDOWN_GRACE_MS: number;
    METRICS_BEARER?: string | undefined;
    DB_MAX_CONNS?: number;
    DB_MIN_CONNS?: number;
    DB_CONNECT_TIMEOUT?: number;
    DB_MAX_CONN_IDLE?: number;
    DB_MAX_CONN_LIFETIME?: number;
  },
  mode: CaracalMode,
  signing: SignaturePolicy,
): CaracalServiceSettings {
  return {
    port: e.PORT,
    host: e.OPS_HOST ?? "0.0.0.0",
    databaseUrl: e.DATABASE_URL ?? "",
    redisUrl: e.REDIS_URL,
    mode,
    signing,
    keyPrefix: e.CARACAL_KEY_PREFIX,
    shutdownGraceMs: e.CARACAL_SHUTDOWN_GRACE_MS,
    metricsBearer: e.METRICS_BEARER,
    db: {
      maxConnections: e.DB_MAX_CONNS ?? 10,
      minConnections: e.DB_MIN_CONNS ?? 0,
      connectTimeoutMs: e.DB_CONNECT_TIMEOUT ?? 10_000,
      idleTimeoutMs: e.DB_MAX_CONN_IDLE ?? 300_000,
      maxLifetimeMs: e.DB_MAX_CONN_LIFETIME ?? 1_800_000,
    },
  };
}
