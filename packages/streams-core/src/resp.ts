/**
 * XADD commands encoded straight into RESP, for the publisher's hot path.
 *
 * Why: ioredis builds a command from an argument array (`args.flat()`, then one string concatenation
 * and one `Buffer.byteLength` per argument when written). For a 20-argument XADD that was most of the
 * client's CPU per entry (profile of raw pipelined XADD). Here each argument is written once into a
 * reused scratch buffer by one native call, and the command is taken out as one string (or, when not
 * ASCII, one Buffer).
 */
import { Command } from "ioredis";

import type { Fields } from "./codec.js";

const DOLLAR = 0x24;
const STAR = 0x2a;
const CR = 0x0d;
const LF = 0x0a;

/**
 * A command whose RESP bytes are already encoded. `key` is its only argument as ioredis sees it, so a
 * cluster pipeline still finds the command's slot; the encoding is immutable, so a resend (reconnect,
 * MOVED/ASK) writes the same command again.
 */
export class EncodedCommand extends Command {
  constructor(
    name: string,
    key: string,
    private readonly encoded: string | Buffer,
  ) {
    super(name, [key], { replyEncoding: "utf8" });
  }

  override toWritable(): string | Buffer {
    return this.encoded;
  }
}

/**
 * Encodes RESP arrays of bulk strings into a scratch buffer that is reused from one command to the next.
 * `take()` returns the command as a string when it is all ASCII (the common case: an on-heap copy that
 * ioredis joins with the rest of its pipeline, as it does its own commands) and otherwise as a Buffer copy
 * of its UTF-8 bytes (a string would be encoded to UTF-8 a second time by the socket). Either way the
 * result does not change when the writer is used again.
 */
export class RespWriter {
  private buffer: Buffer;
  private position = 0;
  private ascii = true;

  constructor(initialBytes = 4 * 1024) {
    this.buffer = Buffer.allocUnsafe(initialBytes);
  }

  /** `*<count>\r\n`: the header of a command of `count` arguments (its name included). */
  array(count: number): void {
    this.reserve(24);
    this.buffer[this.position] = STAR;
    this.position = this.integer(this.position + 1, count);
  }

  /**
   * One argument: `$<byte length>\r\n<bytes>\r\n`. The header is written for the string's length, then
   * the string is encoded by one native `Buffer.write`, whose byte count tells whether it was all ASCII
   * (bytes = length); if not, the header is rewritten for the byte count. (No per-character JS loop:
   * `charCodeAt` runs markedly slower in a process where any class extends `String`, as ioredis 6's
   * `VerbatimString` does.)
   */
  bulk(value: string): void {
    const length = value.length;
    this.reserve(3 * length + 32);
    const buffer = this.buffer;
    const headerAt = this.position;
    buffer[headerAt] = DOLLAR;
    let dataAt = this.integer(headerAt + 1, length);
    const bytes = buffer.write(value, dataAt, "utf8");
    if (bytes !== length) {
      this.ascii = false;
      const shift = decimalDigits(bytes) - decimalDigits(length);
      if (shift > 0) buffer.copyWithin(dataAt + shift, dataAt, dataAt + bytes);
      dataAt = this.integer(headerAt + 1, bytes);
    }
    let p = dataAt + bytes;
    buffer[p++] = CR;
    buffer[p++] = LF;
    this.position = p;
  }

  /** The command written since the last call (see the class comment); the writer starts over. */
  take(): string | Buffer {
    const encoded = this.ascii ? this.buffer.toString("latin1", 0, this.position) : Buffer.from(this.buffer.subarray(0, this.position));
    this.position = 0;
    this.ascii = true;
    return encoded;
  }

  /** Writes the decimal digits of a non-negative integer and CRLF at `at`; returns the offset after them. */
  private integer(at: number, n: number): number {
    const buffer = this.buffer;
    let end = at + decimalDigits(n);
    for (let p = end - 1, rest = n; p >= at; p--, rest = Math.floor(rest / 10)) buffer[p] = 0x30 + (rest % 10);
    buffer[end++] = CR;
    buffer[end++] = LF;
    return end;
  }

  /** Room for `bytes` more bytes; the unfinished command moves with it. */
  private reserve(bytes: number): void {
    if (this.position + bytes <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.position + bytes + 1024));
    this.buffer.copy(next, 0, 0, this.position);
    this.buffer = next;
  }
}

/**
 * `XADD key MAXLEN ~ maxLen * field value ... [_sig2 v _sig v]`, with `fields` in their own order minus any
 * `_sig`/`_sig2` they carry (a caller's stale signatures), then the given signatures. Returns the command
 * as `RespWriter.take` does.
 */
export function encodeXadd(
  writer: RespWriter,
  key: string,
  maxLen: number,
  fields: Fields,
  signatures: ReadonlyArray<{ field: string; value: string }> | undefined,
): string | Buffer {
  let pairs = signatures === undefined ? 0 : signatures.length;
  for (const name in fields) if (!isSignatureField(name) && fields[name] != null) pairs++;
  writer.array(6 + 2 * pairs);
  writer.bulk("XADD");
  writer.bulk(key);
  writer.bulk("MAXLEN");
  writer.bulk("~");
  writer.bulk(String(maxLen));
  writer.bulk("*");
  for (const name in fields) {
    // Untyped callers: null/undefined is omitted (WIRE §2, and the signature skips it too), other values as text.
    const value: unknown = fields[name];
    if (isSignatureField(name) || value == null) continue;
    writer.bulk(name);
    writer.bulk(typeof value === "string" ? value : String(value));
  }
  if (signatures !== undefined) {
    for (const s of signatures) {
      writer.bulk(s.field);
      writer.bulk(s.value);
    }
  }
  return writer.take();
}

/** Signature fields a caller passes in are never sent: the publisher writes its own (or none, unsigned). */
function isSignatureField(name: string): boolean {
  return name === "_sig" || name === "_sig2";
}

function decimalDigits(n: number): number {
  let digits = 1;
  for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++;
  return digits;
}
