/**
 * Reading dead letters (WIRE §4), for every tool that lists, shows or replays them (the operator CLI, the
 * audit ingestor's DLQ routes, the observers). Reads the current format (`src.<field>`) and the first
 * one (`src_<field>`, where an original field named like a metadata field was lost).
 */
import type { Fields } from "./codec.js";
import type { RedisClient } from "./redis.js";

/** Metadata fields of a dead letter; the first format's `src_<field>` with these names are metadata. */
const METADATA = new Set(["reason", "src_stream", "src_id", "group", "consumer", "deliveries", "error", "received_at", "_sig", "_sig2"]);

export interface DeadLetterRecord {
  /** Entry id in the dead-letter stream. */
  readonly id: string;
  readonly reason: string;
  readonly srcStream: string;
  /** The original stream entry id. */
  readonly srcId: string;
  readonly group: string;
  readonly consumer: string;
  readonly deliveries: number;
  readonly error: string;
  readonly receivedAt: string;
  /** The original entry's fields as the letter carries them (its `_sig` included). */
  readonly original: Fields;
  /** Every field of the letter as stored. */
  readonly fields: Fields;
}

/** Parses one dead letter from its flat field list. */
export function parseDeadLetter(id: string, list: readonly string[]): DeadLetterRecord {
  const fields: Fields = Object.create(null) as Fields;
  for (let i = 0; i + 1 < list.length; i += 2) fields[list[i]!] = list[i + 1]!;
  const original: Fields = Object.create(null) as Fields;
  const dotted = Object.keys(fields).some((k) => k.startsWith("src."));
  for (const [k, v] of Object.entries(fields)) {
    if (dotted && k.startsWith("src.")) original[k.slice(4)] = v;
    else if (!dotted && k.startsWith("src_") && !METADATA.has(k)) original[k.slice(4)] = v;
  }
  return {
    id,
    reason: fields.reason ?? "",
    srcStream: fields.src_stream ?? "",
    srcId: fields.src_id ?? "",
    group: fields.group ?? "",
    consumer: fields.consumer ?? "",
    deliveries: Number(fields.deliveries ?? 0),
    error: fields.error ?? "",
    receivedAt: fields.received_at ?? "",
    original,
    fields,
  };
}

const PAGE = 500;

/**
 * Reads dead letters from a stream key, oldest first: the given ids, or from `start` (inclusive, or
 * exclusive as `(id`) up to `limit` letters whose reason passes `reason`.
 */
export async function readDeadLetters(
  redis: RedisClient,
  key: string,
  options: { limit: number; reason?: (reason: string) => boolean; ids?: readonly string[]; start?: string },
): Promise<DeadLetterRecord[]> {
  if (options.ids !== undefined && options.ids.length > 0) {
    const found = await Promise.all(options.ids.map((id) => redis.xrange(key, id, id) as Promise<Array<[string, string[]]>>));
    return found.flat().map(([id, list]) => parseDeadLetter(id, list));
  }
  const out: DeadLetterRecord[] = [];
  let start = options.start ?? "-";
  while (out.length < options.limit) {
    const page = (await redis.xrange(key, start, "+", "COUNT", PAGE)) as Array<[string, string[]]>;
    for (const [id, list] of page) {
      const letter = parseDeadLetter(id, list);
      if (options.reason === undefined || options.reason(letter.reason)) out.push(letter);
      if (out.length >= options.limit) break;
    }
    if (page.length < PAGE) break;
    start = `(${page[page.length - 1]![0]}`;
  }
  return out;
}
