import { pino } from "pino";
import type { Logger } from "pino";

/**
 * pino JSON logger. Secrets never reach a log line: key-looking fields are redacted wherever they appear,
 * and config objects are logged through `redactConfig`.
 */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({
    name: service,
    level,
    base: { service },
    redact: {
      paths: ["*.key", "*.keyHex", "*.hmacKey", "*.password", "*.secret", "*.secretAccessKey", "*.STREAMS_HMAC_KEY", "*.AUDIT_HMAC_KEY", "*.STREAMS_HMAC_KEYS_PREVIOUS", "*.databaseUrl", "*.redisUrl"],
      censor: "[redacted]",
    },
  });
}

const SECRET_NAME = /(KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL)/i;

/** A copy of a settings object fit for logging: secret-named values and URL passwords are masked. */
export function redactConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(config)) {
    if (SECRET_NAME.test(name)) out[name] = value === undefined || value === "" ? value : "[redacted]";
    else if (typeof value === "string" && /^[a-z+]+:\/\/[^/]*:[^@/]*@/i.test(value)) out[name] = value.replace(/:\/\/([^:/]*):[^@/]*@/, "://$1:[redacted]@");
    else out[name] = value;
  }
  return out;
}
