import { createHash, createHmac } from "node:crypto";

import { RejectedMessageError } from "@caracal/streams-core";
import canonicalize from "canonicalize";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

import { MAX_JSON_DEPTH, canonicalJson, chainLink, contentSha256 } from "./content.js";

describe("canonicalJson (RFC 8785)", () => {
  it("equals the canonicalize package on any JSON value, including after a JSON round trip", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(canonicalJson(value)).toBe(canonicalize(value));
        const parsed: unknown = JSON.parse(JSON.stringify(value));
        expect(canonicalJson(parsed)).toBe(canonicalize(parsed));
      }),
      { numRuns: 2000 },
    );
  });

  it("sorts keys by UTF-16 code units and writes numbers as ECMAScript does (RFC 8785 §3.2.2-3.2.3)", () => {
    const parsed: unknown = JSON.parse('{"\\u20ac":1,"\\r":2,"\\ud83d\\ude00":3,"1":4,"a":[1e21,0.000001,-0,1E-7,100]}');
    expect(canonicalJson(parsed)).toBe('{"\\r":2,"1":4,"a":[1e+21,0.000001,0,1e-7,100],"€":1,"😀":3}');
  });

  it("hashes independently of key order and spacing", () => {
    const a = contentSha256(JSON.parse('{"b": [1, {"y": 2, "x": 1}], "a": "t"}'));
    const b = contentSha256(JSON.parse('{"a":"t","b":[1,{"x":1,"y":2}]}'));
    expect(a).toBe(b);
    expect(a).toBe(createHash("sha256").update('{"a":"t","b":[1,{"x":1,"y":2}]}').digest("hex"));
  });

  it("rejects what has no canonical form with parse_error", () => {
    const deep: unknown = JSON.parse(`${"[".repeat(MAX_JSON_DEPTH + 1)}${"]".repeat(MAX_JSON_DEPTH + 1)}`);
    for (const bad of [JSON.parse('{"a":"\\ud800"}'), JSON.parse('{"\\udc00":1}'), { n: Number.NaN }, { n: Infinity }, deep, { f: () => 1 }]) {
      let error: unknown;
      try {
        canonicalJson(bad);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(RejectedMessageError);
      expect((error as RejectedMessageError).reason).toBe("parse_error");
    }
    expect(() => canonicalJson(JSON.parse(`${"[".repeat(MAX_JSON_DEPTH)}${"]".repeat(MAX_JSON_DEPTH)}`))).not.toThrow();
  });
});

describe("chainLink", () => {
  it("is HMAC-SHA256 over previous || content, or plain SHA-256 without a key", () => {
    const key = Buffer.alloc(32, 7);
    expect(chainLink(key, "ab", "cd")).toBe(createHmac("sha256", key).update("abcd").digest("hex"));
    expect(chainLink(undefined, "ab", "cd")).toBe(createHash("sha256").update("abcd").digest("hex"));
  });
});
