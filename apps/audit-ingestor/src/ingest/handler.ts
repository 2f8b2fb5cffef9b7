/**
 * The audit ingestor's batch handler: domain logic only. The consumer's steps (see `app.ts`) have already
 * checked a present `_sig` and parse nothing, so each message's body is its raw fields;
 * the handler has the batch verified (frame `sig`, JSON, audit event schema, content hash: see
 * `verify.ts`, in worker threads when configured) and writes it to the ledger.
 *
 * Outcome per entry (the engine acks every entry not in `failed`):
 * - failed verification: `RejectedMessageError(reason)` → dead letter + ack;
 * - stored, or already stored with identical content: acked;
 * - same id with other content: `RejectedMessageError("tamper_on_replay")` → dead letter + ack;
 * - the ledger write failed: `TransientError` → stays pending, retried. If the database was unavailable
 *   (`isDatabaseUnavailable`), that is all, however many deliveries. If the write failed for a reason of
 *   the entry's own (PostgreSQL refused its row) and it has been delivered AUDIT_MAX_DELIVERIES times, it
 *   is written to the `audit_events_dlq` table and acked; if that write fails too, it stays pending (no
 *   ack without a durable record).
 */
import type { BatchHandler, Fields, StreamMessage } from "@caracal/streams-core";
import { RejectedMessageError, TransientError, errorMessage } from "@caracal/streams-core";
import type { Logger } from "pino";
import type pg from "pg";

import type { AuditMetrics } from "../metrics.js";
import { writeDlqRows } from "../ledger/dlq-table.js";
import type { BatchResult, LedgerInput, LedgerWriter, PreparedEvent } from "../ledger/writer.js";
import type { Verifier } from "./verify.js";

export interface AuditHandlerOptions {
  writer: LedgerWriter;
  verifier: Verifier;
  pool: pg.Pool;
  /** Logical stream key, for the dlq table ids. */
  stream: string;
  maxDeliveries: number;
  metrics?: AuditMetrics;
  logger?: Logger;
  /** Test hook: called after the batch's ledger transactions ended, before the engine acks. */
  afterWrite?: () => void;
}

/**
 * Errors that say the database cannot take the write now, whatever the rows: unreachable (connection
 * class 08, socket errors, a pool connect timeout), shutting down or starting (57P01-57P03), or out of
 * resources (class 53: too many connections, out of memory, disk full). Isolating rows cannot help, and
 * an entry that only ever met these is not dead-lettered, however often it was delivered: the events are
 * fine, the database is not.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return /Connection terminated|connect|timeout/i.test(errorMessage(error));
  return (
    // class 08 is about the connection, except 08P01: PostgreSQL refusing the bytes of this data (a
    // protocol violation, as text with a NUL character in a COPY row). That is the data, not the database.
    (code.startsWith("08") && code !== "08P01") ||
    code.startsWith("53") ||
    code === "57P01" ||
    code === "57P02" ||
    code === "57P03" ||
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND"].includes(code)
  );
}

/**
 * Writes a batch; when the transaction fails for a reason other than an unreachable database, the rows
 * are isolated so one row PostgreSQL refuses cannot hold back the rest, and no row is sent more than
 * about twice: the rows before the one PostgreSQL named (`refusedRowKey`, from COPY's line number) go
 * again as one batch, that row is set aside, and the rows after it are written one by one, in order,
 * each its own transaction (a large row is re-sent once, not once per level of a binary search).
 * Returns the per-key failures of the rows that could not be written.
 */
export async function writeIsolating(
  writer: LedgerWriter,
  inputs: readonly LedgerInput[] | readonly PreparedEvent[],
  onResult: (r: BatchResult) => void,
): Promise<Map<string, unknown>> {
  type Part = readonly LedgerInput[] | readonly PreparedEvent[];
  const failed = new Map<string, unknown>();
  const write = (part: Part) => (isPrepared(part) ? writer.writePrepared(part) : writer.writeBatch(part));
  const rowByRow = async (part: Part): Promise<void> => {
    for (let k = 0; k < part.length; k++) {
      const row = part.slice(k, k + 1) as Part;
      try {
        onResult(await write(row));
      } catch (error) {
        failed.set(row[0]!.key, error);
        if (isDatabaseUnavailable(error)) {
          // the database went away mid-way: the rest stays pending too
          for (const rest of part.slice(k + 1)) failed.set(rest.key, error);
          return;
        }
      }
    }
  };
  const run = async (part: Part): Promise<void> => {
    try {
      onResult(await write(part));
    } catch (error) {
      if (part.length === 1 || isDatabaseUnavailable(error)) {
        for (const i of part) failed.set(i.key, error);
        return;
      }
      const refused = (error as { refusedRowKey?: unknown }).refusedRowKey;
      const at = typeof refused === "string" ? part.findIndex((p) => p.key === refused) : -1;
      if (at < 0) return rowByRow(part);
      if (at > 0) await run(part.slice(0, at) as Part);
      failed.set(refused as string, error);
      await rowByRow(part.slice(at + 1) as Part);
    }
  };
  await run(inputs);
  return failed;
}

function isPrepared(part: readonly LedgerInput[] | readonly PreparedEvent[]): part is readonly PreparedEvent[] {
  const first = part[0];
  return first !== undefined && "copyPrefix" in first;
}

/** At most one log line per this interval about events that deviate from the published schema. */
const DEVIATION_LOG_INTERVAL_MS = 60_000;

export function createAuditBatchHandler(options: AuditHandlerOptions): BatchHandler<Fields> {
  const { writer, verifier, pool, stream, maxDeliveries, metrics, logger, afterWrite } = options;
  let lastDeviationLogAt = 0;
  let deviationsSinceLog = 0;
  const countDeviations = (id: string, deviations: readonly string[]) => {
    for (const field of deviations) metrics?.schemaDeviations.inc({ field });
    deviationsSinceLog++;
    const now = Date.now();
    if (now - lastDeviationLogAt >= DEVIATION_LOG_INTERVAL_MS) {
      logger?.info({ entry: id, fields: deviations, eventsSinceLastLine: deviationsSinceLog }, "audit events deviate from the published schema: stored as sent (WIRE §6)");
      lastDeviationLogAt = now;
      deviationsSinceLog = 0;
    }
  };
  return async (all) => {
    const failed = new Map<string, unknown>();
    const outcomes = await verifier.verify(all.map((m) => ({ id: m.id, fields: m.fields, redelivered: m.deliveries > 1 })));
    const prepared: PreparedEvent[] = [];
    const messages: Array<StreamMessage<Fields>> = [];
    outcomes.forEach((outcome, i) => {
      const m = all[i]!;
      if (outcome.ok) {
        prepared.push(outcome.prepared);
        messages.push(m);
        if (outcome.deviations.length > 0) countDeviations(m.id, outcome.deviations);
      } else {
        failed.set(m.id, new RejectedMessageError(outcome.reason, outcome.message));
        metrics?.rejected.inc({ reason: outcome.reason });
      }
    });
    const started = performance.now();
    const writeFailures = await writeIsolating(writer, prepared, (r) => {
      metrics?.inserted.inc(r.inserted);
      metrics?.duplicates.inc(r.duplicates);
      for (const [key, error] of r.rejected) {
        failed.set(key, error);
        metrics?.rejected.inc({ reason: error.reason });
      }
      for (const a of r.alerts) metrics?.chainBreaks.inc({ kind: a.kind });
      if (r.alerts.length > 0) logger?.warn({ alerts: r.alerts.map((a) => ({ zone: a.zoneId, event: a.eventId, kind: a.kind })) }, "audit ledger: tamper alerts");
    });
    metrics?.batchSeconds.observe((performance.now() - started) / 1000);
    afterWrite?.();
    if (writeFailures.size === 0) return failed.size > 0 ? { failed } : undefined;

    metrics?.writeFailures.inc();
    const byId = new Map(messages.map((m) => [m.id, m]));
    // only entries whose write failed for a reason of their own; an unavailable database keeps them pending
    const exhausted = [...writeFailures]
      .filter(([, error]) => !isDatabaseUnavailable(error))
      .map(([k]) => byId.get(k)!)
      .filter((m) => m.deliveries >= maxDeliveries);
    const firstError = writeFailures.values().next().value;
    logger?.error({ err: firstError, entries: writeFailures.size, exhausted: exhausted.length }, "audit ledger: batch write failed; entries stay pending");
    if (exhausted.length > 0) {
      try {
        await writeDlqRows(
          pool,
          stream,
          exhausted.map((m) => ({ streamEntryId: m.id, fields: m.fields, error: errorMessage(writeFailures.get(m.id)), attempts: m.deliveries })),
        );
        for (const m of exhausted) writeFailures.delete(m.id);
        metrics?.dlqRows.inc(exhausted.length);
        logger?.warn({ entries: exhausted.map((m) => m.id), maxDeliveries }, "audit ledger: entries moved to audit_events_dlq");
      } catch (error) {
        logger?.error({ err: error }, "audit ledger: audit_events_dlq write failed; entries stay pending");
      }
    }
    for (const [key, error] of writeFailures) failed.set(key, new TransientError(`ledger write failed: ${errorMessage(error)}`, { cause: error }));
    return { failed };
  };
}
