/**
 * `audit verify` runs the audit ingestor's own verification (`runVerifyCommand`: the same code as
 * `node apps/audit-ingestor/dist/verify.js`), with its exit status (0 intact, 1 broken, 2 usage).
 * `audit export --hour` re-exports one hour to S3 (`runExportHourCommand`, the ingestor's exporter).
 * `audit search` reads the ledger by zone, time range, event type and decision, newest first, paged by
 * `chain_seq` (`--cursor` is the last row's `chain_seq` of the previous page).
 */
import { runExportHourCommand, runVerifyCommand } from "@caracal/audit-ingestor";

import type { Connections, Env } from "../config.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { printJson, renderTable } from "../output.js";

export async function auditVerify(env: Env, io: Io, options: { zone: string; from?: string; to?: string }): Promise<number> {
  const argv = ["--zone", options.zone];
  if (options.from !== undefined) argv.push("--from", options.from);
  if (options.to !== undefined) argv.push("--to", options.to);
  return runVerifyCommand(argv, env, { out: (l) => io.out(l), err: (l) => io.err(l) });
}

/** `audit export --hour`: the audit ingestor's own re-export (exit 0 done, 1 failed, 2 usage or not configured). */
export async function auditExport(env: Env, io: Io, options: { hour: string; json?: boolean }): Promise<number> {
  return runExportHourCommand(["--hour", options.hour], env, { out: (l) => io.out(l), err: (l) => io.err(l), json: options.json === true });
}

export interface AuditSearchRow {
  id: string;
  zoneId: string;
  chainSeq: number;
  eventType: string;
  decision: string;
  requestId: string;
  occurredAt: string;
  tamperDetected: boolean;
}

function time(name: string, text: string | undefined): Date | undefined {
  if (text === undefined) return undefined;
  const t = new Date(text);
  if (Number.isNaN(t.getTime())) throw new CliError(`--${name}: not a time (use RFC 3339, e.g. 2026-05-21T12:00:00Z)`, ExitCode.usage);
  return t;
}

export async function auditSearch(
  conn: Connections,
  io: Io,
  options: { zone: string; from?: string; to?: string; type?: string; decision?: string; limit: number; cursor?: string; json?: boolean },
): Promise<AuditSearchRow[]> {
  if (!Number.isInteger(options.limit) || options.limit < 1 || options.limit > 1000) throw new CliError("--limit must be 1 to 1000", ExitCode.usage);
  const conditions = ["zone_id = $1"];
  const values: unknown[] = [options.zone];
  const add = (sql: string, value: unknown) => {
    values.push(value);
    conditions.push(sql.replace("?", `$${values.length}`));
  };
  const from = time("from", options.from);
  const to = time("to", options.to);
  if (from !== undefined) add("occurred_at >= ?", from);
  if (to !== undefined) add("occurred_at < ?", to);
  if (options.type !== undefined) add("event_type = ?", options.type);
  if (options.decision !== undefined) add("decision = ?", options.decision);
  if (options.cursor !== undefined) {
    if (!/^\d+$/.test(options.cursor)) throw new CliError("--cursor must be a chain_seq (a whole number)", ExitCode.usage);
    add("chain_seq < ?", options.cursor);
  }
  values.push(options.limit);
  const { rows } = await conn.pool().query<{
    id: string;
    zone_id: string;
    chain_seq: string;
    event_type: string;
    decision: string;
    request_id: string;
    occurred_at: Date;
    tamper_detected: boolean;
  }>(
    `SELECT id, zone_id, chain_seq, event_type, decision, request_id, occurred_at, tamper_detected
       FROM audit_events WHERE ${conditions.join(" AND ")} ORDER BY chain_seq DESC LIMIT $${values.length}`,
    values,
  );
  const found = rows.map((r) => ({
    id: r.id,
    zoneId: r.zone_id,
    chainSeq: Number(r.chain_seq),
    eventType: r.event_type,
    decision: r.decision,
    requestId: r.request_id,
    occurredAt: r.occurred_at.toISOString(),
    tamperDetected: r.tamper_detected,
  }));
  const nextCursor = found.length === options.limit ? String(found[found.length - 1]!.chainSeq) : null;
  if (options.json) printJson(io, { events: found, nextCursor });
  else if (found.length === 0) io.out(`zone ${options.zone}: no events match`);
  else {
    io.out(
      renderTable(
        io,
        ["chain_seq", "occurred_at", "event_type", "decision", "id", "request_id", "tamper"],
        found.map((r) => [r.chainSeq, r.occurredAt, r.eventType, r.decision, r.id, r.requestId, r.tamperDetected ? "TAMPERED" : ""]),
      ),
    );
    if (nextCursor !== null) io.out(`more: --cursor ${nextCursor}`);
  }
  return found;
}
