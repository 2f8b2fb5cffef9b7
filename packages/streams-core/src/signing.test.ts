import { readFileSync } from "node:fs";

import fc from "fast-check";
import { describe, expect, it } from "vitest";

import { ConfigError } from "./errors.js";
import { StreamSigner, canonicalBytes, canonicalTextV2, hexEqualsConstantTime, parseHmacKey, signaturePolicy } from "./signing.js";

interface Vector {
  description: string;
  stream: string;
  values: Record<string, string | null>;
  expected_canonical: string;
  hmac_key_hex: string;
  expected_sig_hex: string;
}
// Upstream vectors, copied from ../shared/interop/stream-sig-canonicalize.vectors.json.
const vectors = JSON.parse(
  readFileSync(new URL("./test-fixtures/stream-sig-canonicalize.vectors.json", import.meta.url), "utf8"),
) as Vector[];

const KEY = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

describe("upstream _sig vectors", () => {
  it("has the four upstream vectors", () => expect(vectors).toHaveLength(4));
  for (const v of vectors) {
    it(v.description, () => {
      expect(canonicalBytes(v.stream, v.values).toString("utf8")).toBe(v.expected_canonical);
      const signer = StreamSigner.fromHex(v.hmac_key_hex);
      const fields = Object.fromEntries(Object.entries(v.values).filter(([, x]) => x !== null)) as Record<string, string>;
      expect(signer.sign(v.stream, fields)).toBe(v.expected_sig_hex);
      expect(signer.verify(v.stream, { ...fields, _sig: v.expected_sig_hex })).toBe("valid");
    });
  }
});

describe("strict key parsing", () => {
  it.each([
    ["odd length", KEY.slice(1), /odd number/],
    ["non-hex", `${KEY.slice(0, -2)}zz`, /non-hex/],
    ["short", "ab".repeat(31), /31 bytes/],
  ])("rejects a %s key with a clear error that names the variable, not the value", (_label, hex, pattern) => {
    const attempt = () => parseHmacKey(hex, "STREAMS_HMAC_KEY");
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(pattern);
    expect(attempt).toThrow(/STREAMS_HMAC_KEY/);
    try {
      attempt();
    } catch (e) {
      expect((e as Error).message).not.toContain(hex);
    }
  });
  it("accepts 32 bytes and more, upper or lower case", () => {
    expect(parseHmacKey(KEY.toUpperCase(), "K")).toHaveLength(32);
    expect(parseHmacKey(KEY + KEY, "K")).toHaveLength(64);
  });
  it("requires a key in rc and stable, not in dev", () => {
    expect(() => signaturePolicy({ mode: "stable" })).toThrow(/required when CARACAL_MODE=stable/);
    expect(() => signaturePolicy({ mode: "rc", keyHex: "" })).toThrow(ConfigError);
    expect(signaturePolicy({ mode: "dev" }).signer).toBeUndefined();
  });
  it("names every bad previous key at once", () => {
    expect(() => StreamSigner.fromHex(KEY, "abc, zz")).toThrow(/PREVIOUS\[0\].*\n.*PREVIOUS\[1\]/s);
  });
});

describe("rotation", () => {
  it("verifies entries signed with a previous key, signs with the current one", () => {
    const oldKey = "11".repeat(32);
    const oldSigner = StreamSigner.fromHex(oldKey);
    const rotated = StreamSigner.fromHex(KEY, `${"22".repeat(32)},${oldKey}`);
    const fields = { zone_id: "z", reason: "r", session_id: "s" };
    expect(rotated.verify("s", { ...fields, _sig: oldSigner.sign("s", fields) })).toBe("valid");
    expect(oldSigner.verify("s", rotated.signFields("s", fields))).toBe("invalid");
  });
});

describe("properties", () => {
  const fieldName = fc.string({ minLength: 1, maxLength: 12, unit: "grapheme" }).filter((k) => k !== "_sig");
  const fieldSet = fc.dictionary(fieldName, fc.string({ unit: "grapheme", maxLength: 40 }), { maxKeys: 12 });
  const signer = StreamSigner.fromHex(KEY);

  it("any field set with any strings signs and verifies", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", minLength: 1 }), fieldSet, (stream, fields) => {
        expect(signer.verify(stream, signer.signFields(stream, fields))).toBe("valid");
      }),
    );
  });

  it("any single changed byte of a value, key, stream or signature fails", () => {
    fc.assert(
      fc.property(
        fieldSet.filter((f) => Object.keys(f).length > 0),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        fc.constantFrom("value", "key", "stream", "sig"),
        (fields, pick, delta, where) => {
          const signed = signer.signFields("caracal.sessions.revoke", fields);
          const keys = Object.keys(fields);
          const key = keys[pick % keys.length] as string;
          const flip = (s: string) => {
            const bytes = Buffer.from(s, "utf8");
            if (bytes.length === 0) return `${s}\u0001`;
            const i = pick % bytes.length;
            bytes[i] = ((bytes[i] as number) + delta) % 256;
            return bytes.toString("latin1") === s ? `${s}x` : bytes.toString("latin1");
          };
          let stream = "caracal.sessions.revoke";
          const tampered: Record<string, string> = { ...signed };
          if (where === "value") tampered[key] = flip(tampered[key] as string);
          if (where === "key") {
            const v = tampered[key] as string;
            delete tampered[key];
            const renamed = flip(key);
            if (renamed === "_sig" || renamed in tampered) return;
            tampered[renamed] = v;
          }
          if (where === "stream") stream = flip(stream);
          if (where === "sig") {
            const sig = tampered._sig as string;
            const i = pick % sig.length;
            tampered._sig = sig.slice(0, i) + (sig[i] === "0" ? "1" : "0") + sig.slice(i + 1);
          }
          expect(signer.verify(stream, tampered)).toBe("invalid");
        },
      ),
      { numRuns: 500 },
    );
  });

  it("an unsigned entry reads as missing", () => {
    expect(signer.verify("s", { a: "1" })).toBe("missing");
  });
});

describe("canonical key order", () => {
  // Reference: sort by the UTF-8 bytes themselves. Keys mix ASCII, U+E000..FFFF and astral characters,
  // where UTF-16 order and byte order disagree.
  const referenceCanonical = (stream: string, fields: Record<string, string>) =>
    Buffer.from(
      `${stream}\n${Object.keys(fields)
        .filter((k) => k !== "_sig")
        .sort((a, b) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")))
        .map((k) => `${k}=${fields[k]}\n`)
        .join("")}`,
      "utf8",
    );
  const tricky = fc.constantFrom("a", "z", "\uE000", "\uFFFD", "\uFF21", "😀", "𝔸", "é", "_", "");
  const key = fc.array(tricky, { minLength: 1, maxLength: 4 }).map((parts) => parts.join(""));

  it("sorts keys in UTF-8 byte order, astral and high-BMP characters included", () => {
    fc.assert(
      fc.property(fc.dictionary(key, fc.string(), { maxKeys: 10 }), (fields) => {
        expect(canonicalBytes("s", fields).equals(referenceCanonical("s", fields))).toBe(true);
      }),
    );
    expect(canonicalBytes("s", { "\uFFFD": "1", "😀": "2" }).toString("utf8")).toBe("s\n\uFFFD=1\n😀=2\n");
  });
});

describe("hexEqualsConstantTime", () => {
  it("is true only for the identical string", async () => {
    const { hexEqualsConstantTime } = await import("./signing.js");
    const sig = "ab".repeat(32);
    expect(hexEqualsConstantTime(sig, sig)).toBe(true);
    expect(hexEqualsConstantTime(`${sig.slice(0, 63)}c`, sig)).toBe(false);
    expect(hexEqualsConstantTime(`c${sig.slice(1)}`, sig)).toBe(false);
    // upper-case hex is the same signature (upstream accepts it)
    expect(hexEqualsConstantTime(sig.toUpperCase(), sig)).toBe(true);
    expect(hexEqualsConstantTime(sig.slice(2), sig)).toBe(false);
    expect(hexEqualsConstantTime("", sig)).toBe(false);
  });
});

describe("_sig2: the unambiguous second signature", () => {
  const signer = StreamSigner.fromHex(KEY);
  const strict = StreamSigner.fromHex(KEY, "", "STREAMS_HMAC_KEY", { requireV2: true });
  const stream = "caracal.sessions.revoke";

  it("signFields writes _sig2 and a _sig over the fields with _sig2 among them (upstream verifiers accept it)", () => {
    const signed = signer.signFields(stream, { zone_id: "z", reason: "r", session_id: "s" });
    expect(signed._sig2).toMatch(/^[0-9a-f]{64}$/);
    // an upstream verifier: _sig over every field but _sig, _sig2 included
    const { _sig: sig, ...rest } = signed;
    expect(sig).toBe(signer.sign(stream, rest));
    expect(signer.verify(stream, signed)).toBe("valid");
    expect(strict.verify(stream, signed)).toBe("valid");
  });

  it("rejects an entry re-split into other fields under the same _sig once _sig2 is present or required", () => {
    // `_sig` alone is ambiguous: one field whose value holds "\nkey=value" signs like two fields.
    const original = { reason: "r\nsession_id=victim", zone_id: "z" };
    const resplit = { reason: "r", session_id: "victim", zone_id: "z" };
    expect(canonicalBytes(stream, original).equals(canonicalBytes(stream, resplit))).toBe(true);
    const legacySig = signer.sign(stream, original);
    expect(signer.verify(stream, { ...resplit, _sig: legacySig }), "_sig alone cannot tell them apart").toBe("valid");

    const signed = signer.signFields(stream, original);
    const forged = { ...resplit, _sig: signed._sig as string, _sig2: signed._sig2 as string };
    expect(signer.verify(stream, forged)).toBe("invalid");
    // stripping _sig2 is no downgrade where every producer sends it
    expect(strict.verify(stream, { ...resplit, _sig: legacySig })).toBe("missing");
  });

  it("accepts an entry with _sig only unless _sig2 is required; rejects a wrong _sig2", () => {
    const fields = { zone_id: "z", reason: "r", session_id: "s" };
    const v1 = { ...fields, _sig: signer.sign(stream, fields) };
    expect(signer.verify(stream, v1)).toBe("valid");
    expect(strict.verify(stream, v1)).toBe("missing");
    const signed = signer.signFields(stream, fields);
    expect(signer.verify(stream, { ...signed, _sig2: "0".repeat(64) })).toBe("invalid");
    expect(signer.verify(stream, { ...signed, session_id: "other" })).toBe("invalid");
  });

  it("length prefixes make field boundaries unambiguous", () => {
    expect(canonicalTextV2(stream, { a: "1b", c: "2" })).not.toBe(canonicalTextV2(stream, { a: "1", b: "c2" }));
    expect(canonicalTextV2("s", { k: "é" })).toBe("caracal-sig2\n1:s1:k2:é");
  });

  it("verifies with previous keys too (rotation)", () => {
    const oldSigner = StreamSigner.fromHex("11".repeat(32));
    const rotated = StreamSigner.fromHex(KEY, "11".repeat(32), "STREAMS_HMAC_KEY", { requireV2: true });
    expect(rotated.verify(stream, oldSigner.signFields(stream, { zone_id: "z" }))).toBe("valid");
  });
});

describe("upper-case hex signatures (upstream accepts them)", () => {
  const signer = StreamSigner.fromHex(KEY);
  it("accepts an upper-case _sig (as upstream producers may send it) and still rejects a wrong one", () => {
    const fields = { a: "1" };
    expect(signer.verify("s", { ...fields, _sig: signer.sign("s", fields).toUpperCase() })).toBe("valid");
    const signed = signer.signFields("s", fields);
    expect(signer.verify("s", { ...signed, _sig: (signed._sig as string).toUpperCase() })).toBe("valid");
    const wrong = `${(signed._sig as string).slice(0, -1).toUpperCase()}${(signed._sig as string).endsWith("0") ? "1" : "0"}`;
    expect(signer.verify("s", { ...signed, _sig: wrong })).toBe("invalid");
  });
  it("folds only A-F: other characters never match a hex digit", () => {
    const expected = "a".repeat(64);
    expect(hexEqualsConstantTime("A".repeat(64), expected)).toBe(true);
    expect(hexEqualsConstantTime("!".repeat(64), expected)).toBe(false);
    expect(hexEqualsConstantTime("a".repeat(63) + "G", "a".repeat(63) + "g")).toBe(false);
    expect(hexEqualsConstantTime("0".repeat(64), "0".repeat(64))).toBe(true);
    expect(hexEqualsConstantTime("\u0010".repeat(64), "0".repeat(64))).toBe(false);
  });
});
