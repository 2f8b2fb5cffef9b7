/**
 * `dlq list|show|replay|purge <stream>`: the dead letters of a stream (WIRE §4). `<stream>` is either a
 * source stream of the registry (its dead-letter stream is used) or a dead-letter stream itself.
 *
 * Replay re-publishes each letter's original fields to its source stream, signed anew with this
 * environment's key (the original `_sig`/`_sig2` are dropped), with `replayed_from` = `<dead-letter
 * stream>/<letter id>` so consumers and operators can trace it. It is idempotent: a marker per letter
 * (`<prefix>dlq-replayed:<dead-letter stream>:<id>`, kept 30 days) makes a second replay of the same letter
 * a no-op, and rate-limited (`--rate` letters per second).
 */
import type { DeadLetterRecord, Fields } from "@caracal/streams-core";
import { StreamPublisher, Topics, readDeadLetters, sleep, streamKey, topicByStream } from "@caracal/streams-core";

import type { Connections } from "../config.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { formatAge, entryIdAgeSeconds, printJson, renderTable } from "../output.js";

const SIGNATURE_FIELDS = new Set(["_sig", "_sig2"]);
const REPLAY_MARKER_TTL_SECONDS = 30 * 86_400;
export const REPLAYED_FROM_FIELD = "replayed_from";

/** Resolves a stream argument to its dead-letter stream. */
export function deadLetterStreamOf(stream: string): string {
  const topic = topicByStream(stream);
  if (topic?.deadLetterStream !== undefined) return topic.deadLetterStream;
  const isDead = Object.values(Topics).some((t) => t.deadLetterStream === stream);
  if (isDead) return stream;
  throw new CliError(`unknown stream ${JSON.stringify(stream)}: give a stream of the registry or its dead-letter stream (see \`caracal-streams streams\`)`, ExitCode.usage);
}

function byReason(reason: string | undefined): ((r: string) => boolean) | undefined {
  return reason === undefined ? undefined : (r) => r === reason;
}

/** A letter as printed: its metadata and original fields (the stored fields are in `original` and the metadata). */
function view(l: DeadLetterRecord) {
  const { fields: _fields, ...rest } = l;
  return rest;
}

export async function dlqList(conn: Connections, io: Io, stream: string, options: { limit: number; reason?: string; json?: boolean }): Promise<void> {
  const dead = deadLetterStreamOf(stream);
  const letters = await readDeadLetters(conn.redis(), streamKey(dead, conn.keyPrefix), { limit: options.limit, reason: byReason(options.reason) });
  if (options.json) return printJson(io, { deadLetterStream: dead, letters: letters.map(view) });
  if (letters.length === 0) return io.out(`${dead}: no dead letters`);
  io.out(
    renderTable(
      io,
      ["id", "age", "reason", "source id", "group", "deliveries", "error"],
      letters.map((l) => [l.id, formatAge(entryIdAgeSeconds(l.id)), l.reason, l.srcId, l.group, l.deliveries, l.error]),
    ),
  );
}

export async function dlqShow(conn: Connections, io: Io, stream: string, id: string, options: { json?: boolean }): Promise<void> {
  const dead = deadLetterStreamOf(stream);
  const [letter] = await readDeadLetters(conn.redis(), streamKey(dead, conn.keyPrefix), { limit: 1, ids: [id] });
  if (letter === undefined) throw new CliError(`${dead}: no dead letter ${id}`, ExitCode.problemFound);
  if (options.json) return printJson(io, view(letter));
  const { original, fields: _fields, ...meta } = letter;
  for (const [k, v] of Object.entries(meta)) io.out(`${k.padEnd(12)} ${String(v)}`);
  io.out("original fields:");
  for (const [k, v] of Object.entries(original)) io.out(`  ${k} = ${v}`);
}

export interface ReplaySummary {
  deadLetterStream: string;
  replayed: Array<{ id: string; srcStream: string; newId: string }>;
  skipped: Array<{ id: string; why: string }>;
  failed: Array<{ id: string; error: string }>;
}

export async function dlqReplay(
  conn: Connections,
  io: Io,
  stream: string,
  options: { ids?: string[]; reason?: string; limit: number; rate: number; dryRun?: boolean; json?: boolean },
  signal: AbortSignal,
): Promise<ReplaySummary> {
  const dead = deadLetterStreamOf(stream);
  const redis = conn.redis();
  const publisher = new StreamPublisher({ redis, signing: conn.signing(), keyPrefix: conn.keyPrefix });
  const letters = await readDeadLetters(redis, streamKey(dead, conn.keyPrefix), {
    limit: options.limit,
    reason: byReason(options.reason),
    ...(options.ids ? { ids: options.ids } : {}),
  });
  const summary: ReplaySummary = { deadLetterStream: dead, replayed: [], skipped: [], failed: [] };
  const intervalMs = 1000 / options.rate;
  const started = Date.now();
  for (const [i, letter] of letters.entries()) {
    if (signal.aborted) break;
    if (topicByStream(letter.srcStream) === undefined) {
      summary.skipped.push({ id: letter.id, why: `source stream ${JSON.stringify(letter.srcStream)} is not in the registry` });
      continue;
    }
    if (Object.keys(letter.original).length === 0) {
      summary.skipped.push({ id: letter.id, why: "the letter carries no original fields" });
      continue;
    }
    const marker = `${conn.keyPrefix}dlq-replayed:${dead}:${letter.id}`;
    if (options.dryRun) {
      const done = await redis.get(marker);
      if (done !== null) summary.skipped.push({ id: letter.id, why: `already replayed as ${done}` });
      else summary.replayed.push({ id: letter.id, srcStream: letter.srcStream, newId: "(dry run)" });
      continue;
    }
    // Claim the letter first, so two operators replaying at once publish it once.
    const claimed = await redis.set(marker, "in-progress", "EX", REPLAY_MARKER_TTL_SECONDS, "NX");
    if (claimed !== "OK") {
      summary.skipped.push({ id: letter.id, why: `already replayed as ${(await redis.get(marker)) ?? "?"}` });
      continue;
    }
    const fields: Fields = Object.create(null) as Fields;
    for (const [k, v] of Object.entries(letter.original)) if (!SIGNATURE_FIELDS.has(k)) fields[k] = v;
    fields[REPLAYED_FROM_FIELD] = `${dead}/${letter.id}`;
    try {
      const newId = await publisher.publish(letter.srcStream, fields);
      await redis.set(marker, newId, "EX", REPLAY_MARKER_TTL_SECONDS);
      summary.replayed.push({ id: letter.id, srcStream: letter.srcStream, newId });
    } catch (error) {
      await redis.del(marker).catch(() => undefined);
      summary.failed.push({ id: letter.id, error: error instanceof Error ? error.message : String(error) });
    }
    if (!options.json && io.isTTY) io.err(`\rreplayed ${summary.replayed.length}/${letters.length}`);
    // Rate limit: letter i+1 not before started + (i+1) * interval.
    const due = started + (i + 1) * intervalMs - Date.now();
    if (due > 0 && !(await sleep(due, signal))) break;
  }
  if (options.json) printJson(io, summary);
  else {
    if (io.isTTY && letters.length > 0) io.err("\n");
    for (const r of summary.replayed) io.out(`replayed ${r.id} -> ${r.srcStream} ${r.newId}`);
    for (const s of summary.skipped) io.out(`skipped  ${s.id}: ${s.why}`);
    for (const f of summary.failed) io.out(`failed   ${f.id}: ${f.error}`);
    io.out(`${dead}: ${summary.replayed.length} replayed, ${summary.skipped.length} skipped, ${summary.failed.length} failed`);
  }
  return summary;
}

export async function dlqPurge(conn: Connections, io: Io, stream: string, options: { ids?: string[]; all?: boolean; yes?: boolean }): Promise<number> {
  const dead = deadLetterStreamOf(stream);
  const hasIds = options.ids !== undefined && options.ids.length > 0;
  if (hasIds === Boolean(options.all)) throw new CliError("purge needs either --id <id> (repeatable) or --all", ExitCode.usage);
  const redis = conn.redis();
  const key = streamKey(dead, conn.keyPrefix);
  const what = options.all ? `every dead letter of ${dead} (${await redis.xlen(key)} entries)` : `${options.ids!.length} dead letter(s) of ${dead}`;
  if (!options.yes) {
    if (!io.isTTY) throw new CliError(`refusing to purge ${what} without a terminal to confirm: pass --yes`, ExitCode.usage);
    if (!(await io.confirm(`Delete ${what}? This cannot be undone. [y/N] `))) throw new CliError("purge cancelled", ExitCode.cancelled);
  }
  // XTRIM keeps the stream and any group on it; XDEL removes single letters.
  const removed = options.all ? await redis.xtrim(key, "MAXLEN", 0) : await redis.xdel(key, ...options.ids!);
  io.out(`${dead}: ${removed} dead letter(s) deleted`);
  return removed;
}
