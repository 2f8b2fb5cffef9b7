/**
 * XADD commands encoded straight into RESP, for the publisher's hot path.
 *
 * Why: ioredis builds a command from an argument array (`args.flat()`, then one string concatenation
 * and one `Buffer.byteLength` per argument when written). For a 20-argument XADD that was most of the
 * client's CPU per entry (profile of raw pipelined XADD). Here each argument is written once into a
 * reused scratch buffer, ASCII arguments (ids, hex signatures, timestamps, most field values) byte by
 * byte, and the command is taken out as one string (or, when not ASCII, one Buffer).
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
          this.ascii = false;
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

  /** The command written since the last call (see the class comment); the writer starts over. */
  take(): string | Buffer {
    const encoded = this.ascii ? this.buffer.toString("latin1", 0, this.position) : Buffer.from(this.buffer.subarray(0, this.position));
    this.position = 0;
    this.ascii = true;
    return encoded;
  }

  private bulkNative(value: string): void {
    const bytes = Buffer.byteLength(value, "utf8");
    if (bytes !== value.length) this.ascii = false;
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

  /** Room for `bytes` more bytes; the unfinished command moves with it. */
  private reserve(bytes: number): void {
    if (this.position + bytes <= this.buffer.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.position + bytes + 1024));
    this.buffer.copy(next, 0, 0, this.position);
    this.buffer = next;
  }
}

/**
 * `XADD key MAXLEN ~ maxLen * field value ... [signatureField signature]`, with `fields` in their own
 * order minus `omitField` (a caller's stale signature), then the signature when given. Returns the
 * command as `RespWriter.take` does.
 */
export function encodeXadd(
  writer: RespWriter,
  key: string,
  maxLen: number,
  fields: Fields,
  omitField: string,
  signature: { field: string; value: string } | undefined,
): string | Buffer {
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
