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
import type { Fields, RedisClient } from "@caracal/streams-core";
import { StreamPublisher, Topics, sleep, streamKey, topicByStream } from "@caracal/streams-core";

import type { Connections } from "../config.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { formatAge, entryIdAgeSeconds, printJson, renderTable } from "../output.js";

/** Dead-letter metadata fields (WIRE §4); everything under `src.` is the original entry. */
const METADATA = new Set(["reason", "src_stream", "src_id", "group", "consumer", "deliveries", "error", "received_at", "_sig", "_sig2"]);
const SIGNATURE_FIELDS = new Set(["_sig", "_sig2"]);
const REPLAY_MARKER_TTL_SECONDS = 30 * 86_400;
export const REPLAYED_FROM_FIELD = "replayed_from";

export interface DeadLetterEntry {
  id: string;
  reason: string;
  srcStream: string;
  srcId: string;
  group: string;
  consumer: string;
  deliveries: number;
  error: string;
  receivedAt: string;
  /** The original entry's fields, as the dead letter carries them. */
  original: Fields;
}

/** Resolves a stream argument to its dead-letter stream. */
export function deadLetterStreamOf(stream: string): string {
  const topic = topicByStream(stream);
  if (topic?.deadLetterStream !== undefined) return topic.deadLetterStream;
  const isDead = Object.values(Topics).some((t) => t.deadLetterStream === stream);
  if (isDead) return stream;
  throw new CliError(`unknown stream ${JSON.stringify(stream)}: give a stream of the registry or its dead-letter stream (see \`caracal-streams streams\`)`, ExitCode.usage);
}

/**
 * Parses one dead letter. The current format carries the original fields as `src.<field>`; the first
 * format (`src_<field>`) is read too, minus the metadata names it could not tell apart.
 */
export function parseDeadLetter(id: string, list: readonly string[]): DeadLetterEntry {
  const f: Record<string, string> = Object.create(null) as Record<string, string>;
  for (let i = 0; i + 1 < list.length; i += 2) f[list[i]!] = list[i + 1]!;
  const original: Fields = Object.create(null) as Fields;
  const dotted = Object.keys(f).some((k) => k.startsWith("src."));
  for (const [k, v] of Object.entries(f)) {
    if (dotted && k.startsWith("src.")) original[k.slice(4)] = v;
    else if (!dotted && k.startsWith("src_") && !METADATA.has(k)) original[k.slice(4)] = v;
  }
  return {
    id,
    reason: f.reason ?? "",
    srcStream: f.src_stream ?? "",
    srcId: f.src_id ?? "",
    group: f.group ?? "",
    consumer: f.consumer ?? "",
    deliveries: Number(f.deliveries ?? 0),
    error: f.error ?? "",
    receivedAt: f.received_at ?? "",
    original,
  };
}

export async function readDeadLetters(
  redis: RedisClient,
  key: string,
  options: { limit: number; reason?: string; ids?: readonly string[]; start?: string },
): Promise<DeadLetterEntry[]> {
  if (options.ids !== undefined && options.ids.length > 0) {
    const found = await Promise.all(options.ids.map((id) => redis.xrange(key, id, id) as Promise<Array<[string, string[]]>>));
    return found.flat().map(([id, list]) => parseDeadLetter(id, list));
  }
  const out: DeadLetterEntry[] = [];
  let start = options.start ?? "-";
  // Page through the stream until `limit` letters match the reason filter.
  while (out.length < options.limit) {
    const page = (await redis.xrange(key, start, "+", "COUNT", 500)) as Array<[string, string[]]>;
    for (const [id, list] of page) {
      const letter = parseDeadLetter(id, list);
      if (options.reason === undefined || letter.reason === options.reason) out.push(letter);
      if (out.length >= options.limit) break;
    }
    if (page.length < 500) break;
    start = `(${page[page.length - 1]![0]}`;
  }
  return out;
}

export async function dlqList(conn: Connections, io: Io, stream: string, options: { limit: number; reason?: string; json?: boolean }): Promise<void> {
  const dead = deadLetterStreamOf(stream);
  const letters = await readDeadLetters(conn.redis(), streamKey(dead, conn.keyPrefix), { limit: options.limit, ...(options.reason ? { reason: options.reason } : {}) });
  if (options.json) return printJson(io, { deadLetterStream: dead, letters });
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
  if (options.json) return printJson(io, letter);
  const { original, ...meta } = letter;
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
    ...(options.reason ? { reason: options.reason } : {}),
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
