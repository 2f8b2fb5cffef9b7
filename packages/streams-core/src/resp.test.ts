import { Command } from "ioredis";
import { describe, expect, it } from "vitest";

import { RespWriter, encodeXadd } from "./resp.js";

/** The bytes a socket write of `encoded` sends (ioredis writes strings as UTF-8). */
function bytesOf(encoded: string | Buffer): Buffer {
  return typeof encoded === "string" ? Buffer.from(encoded, "utf8") : encoded;
}

/** What ioredis itself writes for the same command (its `toWritable` of the argument list). */
function ioredisBytes(name: string, args: string[]): Buffer {
  const writable = new Command(name, args).toWritable(undefined as never);
  return typeof writable === "string" ? Buffer.from(writable, "utf8") : writable;
}

const awkward = [
  "",
  "=",
  "a\nb\r\nc",
  "é",
  "zone-✓",
  "😀 emoji and surrogates",
  "x".repeat(95),
  "y".repeat(96),
  "z".repeat(97),
  `${"ascii ".repeat(30)}then ü`,
  "ü".repeat(200),
  "\u0000nul",
  "\u007f",
  "\u0080",
];

describe("encodeXadd", () => {
  it("writes the same bytes as ioredis for awkward field values and keys", () => {
    const writer = new RespWriter(64); // small: forces the buffer to grow mid-command
    for (const value of awkward) {
      const fields = { [`k-${value.slice(0, 3)}`]: value, plain: "v", _sig: "stale", _sig2: "stale" };
      const encoded = encodeXadd(writer, `stream:${value.slice(0, 2)}`, 100_000, fields, [
        { field: "_sig2", value: "fresh2" },
        { field: "_sig", value: "fresh" },
      ]);
      // ASCII commands come out as strings (a string with other characters would be re-encoded).
      expect(typeof encoded === "string", JSON.stringify(value)).toBe([...value].every((c) => c.charCodeAt(0) < 0x80));
      const bytes = bytesOf(encoded);
      const expected = ioredisBytes("XADD", [
        `stream:${value.slice(0, 2)}`, "MAXLEN", "~", "100000", "*", `k-${value.slice(0, 3)}`, value, "plain", "v", "_sig2", "fresh2", "_sig", "fresh",
      ]);
      expect(bytes.equals(expected), JSON.stringify(value)).toBe(true);
    }
  });

  it("keeps every command taken intact while the writer is reused and grows", () => {
    const writer = new RespWriter(32);
    const commands = Array.from({ length: 50 }, (_, i) => {
      const fields = { n: String(i), body: (i % 2 === 0 ? "é" : "e").repeat(i * 7) };
      return { bytes: bytesOf(encodeXadd(writer, "s", 10, fields, undefined)), fields };
    });
    for (const { bytes, fields } of commands) {
      expect(bytes.equals(ioredisBytes("XADD", ["s", "MAXLEN", "~", "10", "*", "n", fields.n, "body", fields.body]))).toBe(true);
    }
  });

  it("omits null and undefined values and writes other values as text (untyped callers)", () => {
    const fields = { a: "1", b: null, c: undefined, d: 7 } as unknown as Record<string, string>;
    const bytes = bytesOf(encodeXadd(new RespWriter(), "s", 5, fields, undefined));
    expect(bytes.equals(ioredisBytes("XADD", ["s", "MAXLEN", "~", "5", "*", "a", "1", "d", "7"]))).toBe(true);
  });
});
