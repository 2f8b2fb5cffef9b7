/**
 * `verify --zone <zone> [--from <time>] [--to <time>]`: verifies a zone from the database alone and prints
 * each break. Exit 0 when intact, 1 when anything is broken, 2 on bad usage. Side-effect free: it never
 * marks rows or writes alerts (the sweeper does). The operator CLI calls `runVerifyCommand` too.
 */
import { parseArgs } from "node:util";

import { ConfigError } from "@caracal/streams-core";
import pg from "pg";

import { loadVerifyConfig } from "../config.js";
import { seqRangeForTimes, verifyZone } from "./ledger-verify.js";

export const VERIFY_USAGE = "usage: verify --zone <zone> [--from <time>] [--to <time>]   (times: RFC 3339, bounds on occurred_at)";

export interface CommandIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

export async function runVerifyCommand(argv: readonly string[], env: Record<string, string | undefined>, io: CommandIo): Promise<0 | 1 | 2> {
  let values: { zone?: string; from?: string; to?: string; help?: boolean };
  try {
    values = parseArgs({
      args: [...argv],
      options: { zone: { type: "string" }, from: { type: "string" }, to: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    io.err(`${error instanceof Error ? error.message : String(error)}\n${VERIFY_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(VERIFY_USAGE);
    return 0;
  }
  if (values.zone === undefined || values.zone === "") {
    io.err(`--zone is required\n${VERIFY_USAGE}`);
    return 2;
  }
  const times: Record<"from" | "to", Date | undefined> = { from: undefined, to: undefined };
  for (const name of ["from", "to"] as const) {
    const v = values[name];
    if (v === undefined) continue;
    const t = new Date(v);
    if (Number.isNaN(t.getTime())) {
      io.err(`--${name}: not a time (use RFC 3339, e.g. 2026-05-21T12:00:00Z)\n${VERIFY_USAGE}`);
      return 2;
    }
    times[name] = t;
  }
  let config;
  try {
    config = loadVerifyConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      io.err(error.message);
      return 2;
    }
    throw error;
  }
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 2 });
  try {
    const zone = values.zone;
    const range = await seqRangeForTimes(pool, zone, times.from, times.to);
    if (range === undefined) {
      io.out(`zone ${zone}: no rows in range`);
      return 0;
    }
    const result = await verifyZone(zone, range, { pool, auditKey: config.auditKey, gapGraceMs: config.gapGraceMs });
    for (const b of result.breaks) io.out(`${b.kind}\tzone=${b.zoneId}\tchain_seq=${b.chainSeq}\tid=${b.eventId}\t${b.detail}`);
    if (config.auditKey === undefined) io.err("warning: AUDIT_HMAC_KEY is not set: links are checked as an unkeyed chain (dev ledgers only)");
    io.out(`zone ${zone}: ${result.rowsChecked} rows checked, ${result.breaks.length === 0 ? "intact" : `${result.breaks.length} breaks`}`);
    return result.breaks.length === 0 ? 0 : 1;
  } finally {
    await pool.end();
  }
}
