/**
 * Start-up replay of AUDIT_REPLAY_DIR: the audit publisher's NDJSON spill files (format in streams-core
 * `audit/replay-files.ts`), through the same verification and ledger as stream entries.
 *
 * Contract: a file is deleted only once every line of it is stored, known (duplicate), or dead-lettered on
 * `caracal.audit.events.dlq` with its reason (`src_id` = `replay:<file>:<line>`). If the ledger or the
 * dead-letter write fails, the file stays and is tried again later; lines already stored are then no-ops.
 * Lines carry no `_sig` (it depends on the stream key); `sig` authenticates `data`.
 */
import { basename } from "node:path";
import { readFile } from "node:fs/promises";

import type { DeadLetter, DeadLetterWriter, Fields } from "@caracal/streams-core";
import { RejectedMessageError, Topics, errorMessage, listReplayFiles, removeReplayFile, verifyAuditFrame } from "@caracal/streams-core";
import type { Logger } from "pino";

import type { LedgerInput, LedgerWriter } from "../ledger/writer.js";
import type { AuditMetrics } from "../metrics.js";
import { writeIsolating } from "../ingest/handler.js";

export interface ReplayOptions {
  dir: string;
  writer: LedgerWriter;
  auditKey: Buffer | undefined;
  deadLetters: DeadLetterWriter;
  group: string;
  consumer: string;
  batchSize: number;
  metrics?: AuditMetrics;
  logger?: Logger;
}

export interface ReplaySummary {
  files: number;
  stored: number;
  duplicates: number;
  deadLettered: number;
  /** Files left in place because a write failed. */
  kept: string[];
}

interface BadLine {
  srcId: string;
  fields: Fields;
  reason: string;
  error: string;
}

/** Reads one line into frame fields, or says why it cannot be a frame. */
function lineFields(line: string): Fields | RejectedMessageError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return new RejectedMessageError("parse_error", "replay line is not JSON");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return new RejectedMessageError("parse_error", "replay line is not a JSON object");
  const fields: Fields = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== "string") return new RejectedMessageError("parse_error", `replay line field ${k} is not a string`);
    fields[k] = v;
  }
  return fields;
}

/** One pass over the directory. Never throws for a single file's failure: that file is reported in `kept`. */
export async function replayDirectory(options: ReplayOptions): Promise<ReplaySummary> {
  const summary: ReplaySummary = { files: 0, stored: 0, duplicates: 0, deadLettered: 0, kept: [] };
  const files = await listReplayFiles(options.dir);
  for (const path of files) {
    try {
      const r = await replayFile(path, options);
      summary.files++;
      summary.stored += r.stored;
      summary.duplicates += r.duplicates;
      summary.deadLettered += r.deadLettered;
      await removeReplayFile(path, options.dir);
      options.logger?.info({ file: basename(path), ...r }, "replay file ingested and removed");
    } catch (error) {
      summary.kept.push(path);
      options.logger?.error({ file: basename(path), err: error }, "replay file not fully stored: kept for the next attempt");
    }
  }
  return summary;
}

async function replayFile(path: string, options: ReplayOptions): Promise<{ stored: number; duplicates: number; deadLettered: number }> {
  const text = await readFile(path, "utf8");
  const name = basename(path);
  const bad: BadLine[] = [];
  const inputs: LedgerInput[] = [];
  const fieldsByKey = new Map<string, Fields>();
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const srcId = `replay:${name}:${i + 1}`;
    const fields = lineFields(line);
    if (fields instanceof RejectedMessageError) {
      bad.push({ srcId, fields: { line: line.slice(0, 10_000) }, reason: fields.reason, error: fields.message });
      return;
    }
    try {
      const v = verifyAuditFrame(fields, options.auditKey);
      inputs.push({ key: srcId, event: v.event, data: v.data, json: v.json, sig: v.frame.sig, streamEntryId: undefined, redelivered: true });
      fieldsByKey.set(srcId, fields);
    } catch (error) {
      if (!(error instanceof RejectedMessageError)) throw error;
      bad.push({ srcId, fields, reason: error.reason, error: error.message });
    }
  });

  let stored = 0;
  let duplicates = 0;
  for (let i = 0; i < inputs.length; i += options.batchSize) {
    const failures = await writeIsolating(options.writer, inputs.slice(i, i + options.batchSize), (r) => {
      stored += r.inserted;
      duplicates += r.duplicates;
      options.metrics?.inserted.inc(r.inserted);
      options.metrics?.duplicates.inc(r.duplicates);
      for (const a of r.alerts) options.metrics?.chainBreaks.inc({ kind: a.kind });
      for (const [key, error] of r.rejected) bad.push({ srcId: key, fields: fieldsByKey.get(key) ?? {}, reason: error.reason, error: error.message });
    });
    if (failures.size > 0) throw new Error(`ledger write failed for ${failures.size} lines: ${errorMessage(failures.values().next().value)}`);
  }

  if (bad.length > 0) {
    const dlqStream = Topics.auditEvents.deadLetterStream;
    if (dlqStream === undefined) throw new Error("the audit topic has no dead-letter stream");
    const letters: DeadLetter[] = bad.map((b) => ({
      reason: b.reason,
      srcStream: Topics.auditEvents.stream,
      srcId: b.srcId,
      group: options.group,
      consumer: options.consumer,
      deliveries: 1,
      error: b.error,
      fields: b.fields,
    }));
    const errors = await options.deadLetters.write(dlqStream, letters);
    const failed = errors.filter((e) => e !== undefined);
    if (failed.length > 0) throw new Error(`dead-letter write failed for ${failed.length} lines: ${errorMessage(failed[0])}`);
    for (const b of bad) {
      options.metrics?.rejected.inc({ reason: b.reason });
      options.metrics?.consumerHooks().deadLettered(b.reason, 1);
    }
  }
  options.metrics?.replayed.inc({ outcome: "stored" }, stored);
  options.metrics?.replayed.inc({ outcome: "duplicate" }, duplicates);
  options.metrics?.replayed.inc({ outcome: "dead_lettered" }, bad.length);
  return { stored, duplicates, deadLettered: bad.length };
}
