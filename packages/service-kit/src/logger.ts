import { pino } from "pino";
import type { Logger } from "pino";

/**
 * pino JSON logger. Secrets never reach a log line: key-looking fields are redacted wherever they appear,
 * and settings are logged through `describeSettings` (secrets.ts).
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
