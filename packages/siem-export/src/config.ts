/**
 * SIEM export settings (`SIEM_*`), read by the observers app. The export is on when at least one sink is
 * configured: `SIEM_FILE_DIR`, `SIEM_HEC_URL` (with `SIEM_HEC_TOKEN` or `SIEM_HEC_TOKEN_FILE`) or
 * `SIEM_SYSLOG_HOST`. Every bad variable is named in one error; values are never echoed.
 */
import { boolVar, intVar, loadEnv, urlVar } from "@caracal/service-kit";
import { ConfigError } from "@caracal/streams-core";
import { z } from "zod";

const format = z.enum(["raw", "ocsf"], { message: "must be raw or ocsf" });

export const siemEnvSchema = z.object({
  /** NDJSON files are written here (created if missing). Unset: no file sink. */
  SIEM_FILE_DIR: z.string().min(1).optional(),
  /** A file is closed and a new one started past this size. Default 64 MiB. */
  SIEM_FILE_MAX_BYTES: intVar(64 * 1024 * 1024, { min: 1024 }),
  /** ... or past this age. Default 3,600,000 ms. */
  SIEM_FILE_MAX_AGE_MS: intVar(3_600_000, { min: 1000 }),
  /** `raw` (the audit event as sent) or `ocsf` (OCSF API Activity). Default raw. */
  SIEM_FILE_FORMAT: format.default("raw"),
  /** Splunk HTTP Event Collector: base URL (`/services/collector/event` is appended when no path is given). */
  SIEM_HEC_URL: urlVar(["http:", "https:"]).optional(),
  /** HEC token (secret; `SIEM_HEC_TOKEN_FILE` for a mounted file). */
  SIEM_HEC_TOKEN: z.string().min(1).optional(),
  SIEM_HEC_FORMAT: format.default("raw"),
  SIEM_HEC_INDEX: z.string().min(1).optional(),
  SIEM_HEC_SOURCETYPE: z.string().min(1).default("caracal:audit"),
  /** gzip request bodies. Default true. */
  SIEM_HEC_GZIP: boolVar(true),
  /** Syslog over TCP (RFC 5424, octet-counted per RFC 6587) with CEF messages. */
  SIEM_SYSLOG_HOST: z.string().min(1).optional(),
  /** Default 6514 with TLS, 601 without. */
  SIEM_SYSLOG_PORT: z.coerce.number().int().min(1).max(65_535).optional(),
  SIEM_SYSLOG_TLS: boolVar(false),
  /** PEM CA bundle to verify the syslog server (TLS). Default: the system's CAs. */
  SIEM_SYSLOG_TLS_CA_FILE: z.string().min(1).optional(),
  /** Events per batch read from the stream and sent to each sink. Default 500. */
  SIEM_BATCH_SIZE: intVar(500, { min: 1, max: 10_000 }),
  /** Longest pause between two attempts at a sink that is down. Default 30,000 ms. */
  SIEM_RETRY_MAX_MS: intVar(30_000, { min: 10 }),
  /** Per-request timeout of a sink. Default 10,000 ms. */
  SIEM_SINK_TIMEOUT_MS: intVar(10_000, { min: 100 }),
  /**
   * Pending entries idle this long are taken over by another replica. Long by default: a replica holding a
   * batch while its sink is down must not see it taken over (that would reorder). Default 600,000 ms.
   */
  SIEM_CLAIM_IDLE_MS: intVar(600_000, { min: 1000 }),
});

export type SinkFormat = z.output<typeof format>;

export interface SiemExportConfig {
  file?: { dir: string; maxBytes: number; maxAgeMs: number; format: SinkFormat };
  hec?: { url: string; token: string; format: SinkFormat; index?: string; sourcetype: string; gzip: boolean };
  syslog?: { host: string; port: number; tls: boolean; caFile?: string };
  batchSize: number;
  retryMaxMs: number;
  sinkTimeoutMs: number;
  claimIdleMs: number;
}

/** The export's settings, or undefined when no sink is configured (export off). Throws a ConfigError. */
export function loadSiemExportConfig(env: Record<string, string | undefined>): SiemExportConfig | undefined {
  const e = loadEnv(siemEnvSchema, env);
  if (e.SIEM_HEC_URL !== undefined && e.SIEM_HEC_TOKEN === undefined) throw new ConfigError(["SIEM_HEC_TOKEN: required with SIEM_HEC_URL (or SIEM_HEC_TOKEN_FILE)"]);
  const config: SiemExportConfig = { batchSize: e.SIEM_BATCH_SIZE, retryMaxMs: e.SIEM_RETRY_MAX_MS, sinkTimeoutMs: e.SIEM_SINK_TIMEOUT_MS, claimIdleMs: e.SIEM_CLAIM_IDLE_MS };
  if (e.SIEM_FILE_DIR !== undefined) config.file = { dir: e.SIEM_FILE_DIR, maxBytes: e.SIEM_FILE_MAX_BYTES, maxAgeMs: e.SIEM_FILE_MAX_AGE_MS, format: e.SIEM_FILE_FORMAT };
  if (e.SIEM_HEC_URL !== undefined && e.SIEM_HEC_TOKEN !== undefined) {
    const url = new URL(e.SIEM_HEC_URL);
    if (url.pathname === "/" || url.pathname === "") url.pathname = "/services/collector/event";
    config.hec = { url: url.toString(), token: e.SIEM_HEC_TOKEN, format: e.SIEM_HEC_FORMAT, sourcetype: e.SIEM_HEC_SOURCETYPE, gzip: e.SIEM_HEC_GZIP, ...(e.SIEM_HEC_INDEX ? { index: e.SIEM_HEC_INDEX } : {}) };
  }
  if (e.SIEM_SYSLOG_HOST !== undefined) {
    config.syslog = { host: e.SIEM_SYSLOG_HOST, port: e.SIEM_SYSLOG_PORT ?? (e.SIEM_SYSLOG_TLS ? 6514 : 601), tls: e.SIEM_SYSLOG_TLS, ...(e.SIEM_SYSLOG_TLS_CA_FILE ? { caFile: e.SIEM_SYSLOG_TLS_CA_FILE } : {}) };
  }
  return config.file || config.hec || config.syslog ? config : undefined;
}

/** Settings fit for a start-up log: no token. */
export function describeSiemExportConfig(c: SiemExportConfig | undefined): Record<string, unknown> {
  if (c === undefined) return { enabled: false };
  return {
    enabled: true,
    sinks: [c.file ? `file(${c.file.format})` : undefined, c.hec ? `hec(${c.hec.format})` : undefined, c.syslog ? `syslog${c.syslog.tls ? "+tls" : ""}` : undefined].filter(Boolean),
    hecUrl: c.hec ? new URL(c.hec.url).origin : undefined,
    syslog: c.syslog ? `${c.syslog.host}:${c.syslog.port}` : undefined,
    batchSize: c.batchSize,
  };
}
