/**
 * Secrets in URLs and `<NAME>_FILE` settings: one place for every service.
 */
import { readFileSync } from "node:fs";

import { ConfigError } from "@caracal/streams-core";

/**
 * Settings that may hold a secret and may therefore come from a file (container secrets are mounted as
 * files): `X_FILE=/run/secrets/x` sets `X` to the file's content, trimmed. Setting both is an error.
 */
export const SECRET_SETTINGS = [
  "STREAMS_HMAC_KEY",
  "STREAMS_HMAC_KEYS_PREVIOUS",
  "AUDIT_HMAC_KEY",
  "DATABASE_URL",
  "REDIS_URL",
  "METRICS_BEARER",
  "AUDIT_ADMIN_TOKEN",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "SIEM_HEC_TOKEN",
  "POLICY_BUNDLE_SIGNING_KEY",
] as const;

type Env = NodeJS.ProcessEnv | Record<string, string | undefined>;

/** A copy of `env` with every `<SECRET>_FILE` read into `<SECRET>`; names every problem (never a value). */
export function resolveSecretFiles(env: Env): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = { ...env };
  const problems: string[] = [];
  for (const name of SECRET_SETTINGS) {
    const file = env[`${name}_FILE`];
    if (file === undefined || file === "") continue;
    if (env[name] !== undefined && env[name] !== "") {
      problems.push(`${name}_FILE: ${name} is set too; set one of them`);
      continue;
    }
    try {
      out[name] = readFileSync(file, "utf8").trim();
    } catch (error) {
      problems.push(`${name}_FILE: cannot read the file (${(error as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

const SECRET_QUERY = /^(password|sslpassword|pass|pwd|token|secret|key|sslkey|access_token|auth)$/i;

/**
 * A URL fit for a log line: the password of its userinfo and the values of secret-looking query
 * parameters are masked; works on URLs Node cannot parse too (`redis-cluster://h:p,h:p`, several
 * userinfos), since the masking is textual.
 */
export function redactUrl(url: string): string {
  let out = url.replace(/(\/\/|,)([^:@/,]*):([^@/,]*)@/g, (_m, lead: string, user: string) => `${lead}${user}:[redacted]@`);
  out = out.replace(/([?&])([^=&#]+)=([^&#]*)/g, (m, sep: string, name: string) => (SECRET_QUERY.test(decodeURIComponent(name)) ? `${sep}${name}=[redacted]` : m));
  return out;
}

const SECRET_NAME = /(key|secret|password|token|credential|bearer)/i;

/**
 * A copy of a settings object fit for the start-up log: strings that look like URLs are redacted,
 * values under secret-looking names and Buffers are masked, a signing policy shows only whether a key is
 * set. Nested objects are walked.
 */
export function describeSettings(value: unknown, name = ""): unknown {
  if (value === undefined || value === null) return value;
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return "[redacted]";
  if (typeof value === "string") {
    if (SECRET_NAME.test(name) && !/url$/i.test(name)) return value === "" ? value : "[redacted]";
    return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? redactUrl(value) : value;
  }
  if (Array.isArray(value)) return value.map((v) => describeSettings(v, name));
  if (typeof value === "object") {
    const v = value as Record<string, unknown>;
    // a SignaturePolicy: its signer holds key material
    if ("signer" in v && "mode" in v) return { mode: v.mode, keySet: v.signer !== undefined };
    const out: Record<string, unknown> = {};
    for (const [k, inner] of Object.entries(v)) out[k] = describeSettings(inner, k);
    return out;
  }
  return value;
}
