/**
 * The one dead-letter format (WIRE §4), shared by the consumer engine and any app that dead-letters by
 * itself (e.g. `tamper_on_replay`). Fields, exactly: `reason`, `src_stream`, `src_id` (the original stream
 * entry id), `group`, `consumer`, `deliveries`, `error`, `received_at` (RFC 3339), `src.<field>` for every
 * field of the original entry (its `_sig` included, as `src._sig`), and `_sig`/`_sig2` over the logical
 * dead-letter stream when a key is set. The dot keeps an original field (an audit frame's `id`, say) from
 * ever overwriting the metadata: the first format, `src_<field>`, lost `src_id` to every frame's `id`.
 */
import type { ChainableCommander } from "ioredis";

import type { Fields } from "./codec.js";
import { fieldsToArgs } from "./codec.js";
import type { DeadLetterReason } from "./errors.js";
import { DEAD_LETTER_MAXLEN, streamKey } from "./registry.js";
import type { RedisClient } from "./redis.js";
import { isCluster } from "./redis.js";
import type { SignaturePolicy } from "./signing.js";

export interface DeadLetter {
  readonly reason: DeadLetterReason;
  /** Logical source stream (no key prefix). */
  readonly srcStream: string;
  readonly srcId: string;
  readonly group: string;
  readonly consumer: string;
  readonly deliveries: number;
  /** Error text; never key material. Empty when there is none. */
  readonly error: string;
  /** The original entry's fields as received. */
  readonly fields: Readonly<Fields>;
  /** When the entry was dead-lettered. Default: now. */
  readonly receivedAt?: Date;
}

/** Prefix of the original entry's fields in a dead letter (WIRE §4). */
export const ORIGINAL_PREFIX = "src.";

/** Dead-letter error texts are capped so that one huge message cannot bloat the dead-letter stream. */
const MAX_ERROR_CHARS = 2_000;

/** Builds the unsigned dead-letter fields. */
export function deadLetterFields(letter: DeadLetter): Fields {
  // Every key is fixed metadata or `src.`-prefixed, so a plain object cannot meet `__proto__` here.
  const out: Fields = {
    reason: letter.reason,
    src_stream: letter.srcStream,
    src_id: letter.srcId,
    group: letter.group,
    consumer: letter.consumer,
    deliveries: String(letter.deliveries),
    error: letter.error.length > MAX_ERROR_CHARS ? `${letter.error.slice(0, MAX_ERROR_CHARS)}…` : letter.error,
    received_at: (letter.receivedAt ?? new Date()).toISOString(),
  };
  for (const key in letter.fields) out[`${ORIGINAL_PREFIX}${key}`] = letter.fields[key] as string;
  return out;
}

export interface DeadLetterStreamSample {
  length: number;
  /** Letters ever added (survives trimming). */
  added: number;
  /** Letters removed (trimmed, or deleted by hand) before any group of the stream read them. */
  droppedUnread: number;
  /** Age of the oldest letter still in the stream; 0 when empty. */
  oldestAgeSeconds: number;
}

function pairs(reply: readonly unknown[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (let i = 0; i + 1 < reply.length; i += 2) out.set(String(reply[i]), reply[i + 1]);
  return out;
}

export interface DeadLetterWriterOptions {
  redis: RedisClient;
  signing: SignaturePolicy;
  /** Prepended to the dead-letter stream key; not part of `_sig`. Default "". */
  keyPrefix?: string;
  /** MAXLEN ~ of dead-letter streams. Default DEAD_LETTER_MAXLEN. */
  maxLen?: number;
}

/**
 * Writes dead letters with `XADD ... MAXLEN ~`. `append` adds the XADD to a caller's pipeline (so a batch's
 * dead letters travel with its acks); `write` sends a batch itself. Safe to call concurrently.
 */
export class DeadLetterWriter {
  readonly keyPrefix: string;
  private readonly maxLen: number;

  constructor(private readonly options: DeadLetterWriterOptions) {
    this.keyPrefix = options.keyPrefix ?? "";
    this.maxLen = options.maxLen ?? DEAD_LETTER_MAXLEN;
  }

  /** The signed fields as they will be written to `deadLetterStream` (logical name). */
  prepare(deadLetterStream: string, letter: DeadLetter): Fields {
    const fields = deadLetterFields(letter);
    const signer = this.options.signing.signer;
    return signer === undefined ? fields : signer.signFields(deadLetterStream, fields);
  }

  append(pipeline: ChainableCommander, deadLetterStream: string, letter: DeadLetter): void {
    pipeline.xadd(
      streamKey(deadLetterStream, this.keyPrefix),
      "MAXLEN",
      "~",
      this.maxLen,
      "*",
      ...fieldsToArgs(this.prepare(deadLetterStream, letter)),
    );
  }

  /**
   * Writes the letters to one dead-letter stream in one pipeline; result i is the error of letter i
   * (undefined when written). A failure of the whole pipeline reports that error for every letter.
   */
  async write(deadLetterStream: string, letters: readonly DeadLetter[]): Promise<(Error | undefined)[]> {
    if (letters.length === 0) return [];
    const pipeline = this.options.redis.pipeline();
    for (const letter of letters) this.append(pipeline, deadLetterStream, letter);
    try {
      const results = await pipeline.exec();
      if (results === null) return letters.map(() => new Error("dead-letter pipeline was discarded"));
      return letters.map((_, i) => results[i]?.[0] ?? undefined);
    } catch (error) {
      const e = error instanceof Error ? error : new Error(String(error));
      return letters.map(() => e);
    }
  }

  /**
   * Length, letters added in all (XINFO STREAM `entries-added`), letters removed before any group read
   * them, and the oldest letter's age. Without a group, every removed letter was unread. A missing
   * stream samples as empty; a key of another type throws (the caller's loop records it).
   */
  async sample(deadLetterStream: string): Promise<DeadLetterStreamSample> {
    const key = streamKey(deadLetterStream, this.keyPrefix);
    let info: Map<string, unknown>;
    try {
      info = pairs((await this.options.redis.xinfo("STREAM", key)) as unknown[]);
    } catch (error) {
      if (/no such key/i.test(error instanceof Error ? error.message : String(error))) return { length: 0, added: 0, droppedUnread: 0, oldestAgeSeconds: 0 };
      throw error;
    }
    const length = Number(info.get("length") ?? 0);
    const added = Number(info.get("entries-added") ?? length);
    let read = 0;
    if (Number(info.get("groups") ?? 0) > 0) {
      const groups = (await this.options.redis.xinfo("GROUPS", key)) as unknown[][];
      for (const g of groups) read = Math.max(read, Number(pairs(g).get("entries-read") ?? 0));
    }
    const first = info.get("first-entry") as [string, unknown] | null | undefined;
    const firstMs = first ? Number(String(first[0]).split("-")[0]) : Number.NaN;
    return {
      length,
      added,
      droppedUnread: Math.max(0, added - length - read),
      oldestAgeSeconds: Number.isFinite(firstMs) ? Math.max(0, (Date.now() - firstMs) / 1000) : 0,
    };
  }

  /** True when the connection is a Redis Cluster (pipelines must then stay within one key). */
  get clustered(): boolean {
    return isCluster(this.options.redis);
  }
}
