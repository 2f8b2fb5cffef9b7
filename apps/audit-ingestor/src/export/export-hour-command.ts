/**
 * `export --hour <hour>`: re-exports one UTC hour of the ledger to S3 (`Exporter.exportHourCopy`): to the
 * hour's object when it is missing, else beside it as `...THH.reexport-<µs>.parquet`. Exit 0 written (or
 * nothing to export), 1 failed, 2 bad usage or export not configured. The operator CLI's
 * `audit export --hour` calls it.
 */
import { parseArgs } from "node:util";

import { createPool } from "@caracal/db";
import { databaseUrlVar, loadEnv } from "@caracal/service-kit";
import { ConfigError, errorMessage } from "@caracal/streams-core";
import { pino } from "pino";
import { Registry } from "prom-client";
import type { z } from "zod";

import type { CommandIo } from "../verify/verify-command.js";
import { exportConfigSchema, exportS3ConfigFrom } from "./config-schema.js";
import { createExporter } from "./exporter.js";

export const EXPORT_HOUR_USAGE = "usage: export --hour <hour>   (a UTC hour: 2026-05-21T12, or any RFC 3339 time within it)";

const envSchema = exportConfigSchema.extend({ DATABASE_URL: databaseUrlVar() });

/** `2026-05-21T12`, `2026-05-21T12Z` or any RFC 3339 time: the start of its UTC hour. */
export function parseHour(text: string): Date | undefined {
  const bare = /^(\d{4}-\d{2}-\d{2}T\d{2})Z?$/.exec(text);
  const t = new Date(bare ? `${bare[1]}:00:00Z` : text);
  if (Number.isNaN(t.getTime())) return undefined;
  return new Date(Math.floor(t.getTime() / 3_600_000) * 3_600_000);
}

export async function runExportHourCommand(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  io: CommandIo & { json?: boolean },
): Promise<0 | 1 | 2> {
  let values: { hour?: string; help?: boolean };
  try {
    values = parseArgs({ args: [...argv], options: { hour: { type: "string" }, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals: false }).values;
  } catch (error) {
    io.err(`${errorMessage(error)}\n${EXPORT_HOUR_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(EXPORT_HOUR_USAGE);
    return 0;
  }
  const hour = values.hour === undefined ? undefined : parseHour(values.hour);
  if (hour === undefined) {
    io.err(`--hour is required and must be an hour (e.g. 2026-05-21T12)\n${EXPORT_HOUR_USAGE}`);
    return 2;
  }
  let e: z.output<typeof envSchema>;
  try {
    e = loadEnv(envSchema, env);
  } catch (error) {
    io.err(error instanceof ConfigError ? error.message : errorMessage(error));
    return 2;
  }
  const s3Config = exportS3ConfigFrom(e);
  if (s3Config === undefined) {
    io.err("export is off: set AUDIT_EXPORT_S3_ENDPOINT and AUDIT_EXPORT_S3_BUCKET (as for the audit ingestor)");
    return 2;
  }
  const pool = createPool(e.DATABASE_URL, { max: 1 });
  pool.on("error", () => undefined);
  const exporter = createExporter({ pool, s3Config, logger: pino({ level: "silent" }), registry: new Registry(), pageRows: e.AUDIT_EXPORT_PAGE_ROWS });
  try {
    const result = await exporter.exportHourCopy(hour, new AbortController().signal);
    if (io.json) io.out(JSON.stringify({ hour: hour.toISOString(), ...result }));
    else io.out(result.rows === 0 ? `no rows in the hour starting ${hour.toISOString()}: nothing exported` : `exported ${result.rows} rows of ${hour.toISOString()} to ${result.key}`);
    return 0;
  } catch (error) {
    io.err(`export failed: ${errorMessage(error)}`);
    return 1;
  } finally {
    exporter.close();
    await pool.end();
  }
}
