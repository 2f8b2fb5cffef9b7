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

  it("equals the canonicalize package on objects in and out of order, with index-like, __proto__ and non-BMP keys", () => {
    const key = fc.oneof(
      fc.constantFrom("", "0", "1", "10", "9", "01", "-1", "1.5", "4294967295", "__proto__", "constructor", "toJSON", "a", "b", "aa", "B", "\u00e9", "\ud83d\ude00", "\uff61", "\ue000"),
      fc.string({ maxLength: 4 }),
    );
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: "small" }, fc.jsonValue({ maxDepth: 1 }), fc.array(tie("node"), { maxLength: 4 }), tie("object")),
      object: fc.array(fc.tuple(key, tie("node")), { maxLength: 6 }).map((entries) => JSON.parse(`{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(",")}}`) as unknown),
    })).node;
    fc.assert(
      fc.property(value, (v) => {
        expect(canonicalJson(v)).toBe(canonicalize(v));
      }),
      { numRuns: 3000 },
    );
    // already canonical at every depth, and out of order at one depth only
    for (const text of ['{"a":{"b":[{"c":1,"d":"x"}],"e":null},"f":true}', '{"a":{"b":[{"d":1,"c":"x"}],"e":null},"f":true}', '{"b":1,"a":{"c":2}}']) {
      const parsed: unknown = JSON.parse(text);
      expect(canonicalJson(parsed)).toBe(canonicalize(parsed));
    }
    // a member named __proto__ (an own property after JSON.parse) and index-like keys stay in canonical order
    expect(canonicalJson(JSON.parse('{"b":1,"__proto__":{"z":1,"y":2},"10":3,"9":4}'))).toBe('{"10":3,"9":4,"__proto__":{"y":2,"z":1},"b":1}');
    // non-plain objects are written by their own members only (no toJSON), as before
    expect(canonicalJson({ d: new Date(0), m: new Map([["a", 1]]) })).toBe('{"d":{},"m":{}}');
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
