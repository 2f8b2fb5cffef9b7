/**
 * XADD commands encoded straight into RESP bytes, for the publisher's hot path.
 *
 * Why: ioredis builds a command from an argument array (`args.flat()`, then one string concatenation
 * and one `Buffer.byteLength` per argument when written, then the pipeline's UTF-8 encoding of the
 * joined string). For a 20-argument XADD that was most of the client's CPU per entry (`bench:core`
 * profile). Here each argument is written once into one Buffer per pipeline chunk; ASCII arguments (ids,
 * hex signatures, timestamps, most field values) are copied byte by byte with no intermediate string.
 */
import { Command } from "ioredis";

import type { Fields } from "./codec.js";

const DOLLAR = 0x24;
const STAR = 0x2a;
const CR = 0x0d;
const LF = 0x0a;
/** Arguments longer than this are encoded by Buffer.write (native) instead of the JS byte loop. */
const SHORT_ARGUMENT = 96;

/**
 * A command whose RESP bytes are already encoded. `key` is its only argument as ioredis sees it, so a
 * cluster pipeline still finds the command's slot; the bytes are immutable, so a resend (reconnect,
 * MOVED/ASK) writes the same command again.
 */
export class EncodedCommand extends Command {
  constructor(
    name: string,
    key: string,
    private readonly encoded: Buffer,
  ) {
    super(name, [key], { replyEncoding: "utf8" });
  }

  override toWritable(): Buffer {
    return this.encoded;
  }
}

/**
 * Appends RESP arrays of bulk strings to a growing Buffer. `take()` returns the bytes written since the
 * previous `take()`: a view of this writer's buffer, never overwritten afterwards (growing allocates a
 * new buffer; earlier views keep the old one).
 */
export class RespWriter {
  private buffer: Buffer;
  private position = 0;
  private start = 0;

  constructor(initialBytes = 16 * 1024) {
    this.buffer = Buffer.allocUnsafe(initialBytes);
  }

  /** `*<count>\r\n`: the header of a command of `count` arguments (its name included). */
  array(count: number): void {
    this.reserve(24);
    this.buffer[this.position++] = STAR;
    this.integer(count);
  }

  /** One argument: `$<byte length>\r\n<bytes>\r\n`. */
  bulk(value: string): void {
    const length = value.length;
    if (length <= SHORT_ARGUMENT) {
      this.reserve(length + 32);
      const buffer = this.buffer;
      const headerAt = this.position;
      buffer[this.position++] = DOLLAR;
      this.integer(length);
      let p = this.position;
      for (let i = 0; i < length; i++) {
        const code = value.charCodeAt(i);
        if (code > 0x7f) {
          // Not ASCII: the byte length differs from the length; start this argument again.
          this.position = headerAt;
          this.bulkNative(value);
          return;
        }
        buffer[p++] = code;
      }
      buffer[p++] = CR;
      buffer[p++] = LF;
      this.position = p;
      return;
    }
    this.bulkNative(value);
  }

  /** The bytes written since the last call. */
  take(): Buffer {
    const bytes = this.buffer.subarray(this.start, this.position);
    this.start = this.position;
    return bytes;
  }

  private bulkNative(value: string): void {
    const bytes = Buffer.byteLength(value, "utf8");
    this.reserve(bytes + 32);
    this.buffer[this.position++] = DOLLAR;
    this.integer(bytes);
    this.position += this.buffer.write(value, this.position, "utf8");
    this.buffer[this.position++] = CR;
    this.buffer[this.position++] = LF;
  }

  /** Decimal digits of a non-negative integer, then CRLF. */
  private integer(n: number): void {
    const buffer = this.buffer;
    if (n < 10) {
      buffer[this.position++] = 0x30 + n;
    } else {
      const digits = String(n);
      for (let i = 0; i < digits.length; i++) buffer[this.position++] = digits.charCodeAt(i);
    }
    buffer[this.position++] = CR;
    buffer[this.position++] = LF;
  }

  /** Room for `bytes` more bytes; the unfinished command (since the last `take`) moves with it. */
  private reserve(bytes: number): void {
    if (this.position + bytes <= this.buffer.length) return;
    const pending = this.buffer.subarray(this.start, this.position);
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, pending.length + bytes + 1024));
    pending.copy(next, 0);
    this.buffer = next;
    this.position = pending.length;
    this.start = 0;
  }
}

/**
 * `XADD key MAXLEN ~ maxLen * field value ... [signatureField signature]`, with `fields` in their own
 * order minus `omitField` (a caller's stale signature), then the signature when given. Returns the
 * command's bytes.
 */
export function encodeXadd(
  writer: RespWriter,
  key: string,
  maxLen: number,
  fields: Fields,
  omitField: string,
  signature: { field: string; value: string } | undefined,
): Buffer {
  let pairs = signature === undefined ? 0 : 1;
  for (const name in fields) if (name !== omitField && fields[name] != null) pairs++;
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
    if (name === omitField || value == null) continue;
    writer.bulk(name);
    writer.bulk(typeof value === "string" ? value : String(value));
  }
  if (signature !== undefined) {
    writer.bulk(signature.field);
    writer.bulk(signature.value);
  }
  return writer.take();
}
