import { createHmac, randomBytes } from "node:crypto";

import fc from "fast-check";
import { describe, expect, it } from "vitest";

import { hmacSha256Hex, hmacSha256HexNative, hmacSha256HexOneShot } from "./hmac.js";

describe("HMAC-SHA256", () => {
  it("both implementations give Node's createHmac digest, for any text and key length (RFC 2104)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 200 }), fc.integer({ min: 1, max: 150 }), (text, keyLength) => {
        const key = randomBytes(keyLength);
        const expected = createHmac("sha256", key).update(text, "utf8").digest("hex");
        expect(hmacSha256HexOneShot(key, text)).toBe(expected);
        expect(hmacSha256HexNative(key, text)).toBe(expected);
        expect(hmacSha256Hex(key, text)).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });
  it("matches RFC 4231 test case 2", () => {
    expect(hmacSha256HexOneShot(Buffer.from("Jefe"), "what do ya want for nothing?")).toBe("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  });
});
