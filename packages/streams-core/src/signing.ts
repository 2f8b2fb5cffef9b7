import { createHmac, timingSafeEqual } from "node:crypto";

import { hmacSha256Hex } from "./hmac.js";

import { ConfigError } from "./errors.js";
import type { Fields } from "./codec.js";

/** `CARACAL_MODE` (WIRE §3). `rc` and `stable` require a key and reject unsigned or mis-signed entries. */
export type CaracalMode = "dev" | "rc" | "stable";
export const CARACAL_MODES: readonly CaracalMode[] = ["dev", "rc", "stable"];

export const SIGNATURE_FIELD = "_sig";
/**
 * The second, unambiguous origin signature (docs/decisions.md "`_sig2`"): HMAC-SHA256 over length-prefixed
 * fields, so no value can be re-split into other fields under the same signature. Written by every
 * producer here beside `_sig`; `_sig` (upstream's) covers `_sig2` like any other field.
 */
export const SIGNATURE_V2_FIELD = "_sig2";
const MIN_KEY_BYTES = 32;
/** Domain separation of the `_sig2` canonical bytes from `_sig`'s. */
const V2_TAG = "caracal-sig2";

/**
 * Decodes a hex HMAC key strictly: odd length, a non-hex character or fewer than 32 bytes is a
 * configuration error, never a silent truncation (Buffer.from(hex) would stop at the first bad pair).
 * The error names the variable, never the value.
 */
export function parseHmacKey(hex: string, variable: string): Buffer {
  const trimmed = hex.trim();
  if (trimmed.length % 2 !== 0) throw new ConfigError([`${variable}: hex key has an odd number of characters`]);
  if (!/^[0-9a-fA-F]*$/.test(trimmed)) throw new ConfigError([`${variable}: hex key contains a non-hex character`]);
  const key = Buffer.from(trimmed, "hex");
  if (key.length < MIN_KEY_BYTES) {
    throw new ConfigError([`${variable}: key decodes to ${key.length} bytes, at least ${MIN_KEY_BYTES} are required`]);
  }
  return key;
}

type FieldRecord = Readonly<Record<string, string | null | undefined>>;

/**
 * Canonical bytes of WIRE §3: stream key, "\n", then `key=value\n` for every field but `_sig`, keys sorted
 * by byte order. Values are not escaped; null or undefined values (possible in untyped input) are skipped.
 */
export function canonicalBytes(stream: string, fields: FieldRecord): Buffer {
  return Buffer.from(canonicalText(stream, fields), "utf8");
}

/** The canonical bytes as a JS string (HMAC input is its UTF-8 encoding); avoids a Buffer per entry. */
export function canonicalText(stream: string, fields: FieldRecord): string {
  return canonicalTextWith(stream, fields, undefined, undefined);
}

function sortedKeys(fields: FieldRecord, skipV2: boolean): string[] {
  const keys: string[] = [];
  for (const k in fields) {
    if (k !== SIGNATURE_FIELD && !(skipV2 && k === SIGNATURE_V2_FIELD) && fields[k] !== null && fields[k] !== undefined) keys.push(k);
  }
  return keys.sort(compareBytes);
}

/** `_sig`'s canonical text of `fields` plus one more field (the `_sig2` a producer is adding), without a copy. */
function canonicalTextWith(stream: string, fields: FieldRecord, extraKey: string | undefined, extraValue: string | undefined): string {
  const keys = sortedKeys(fields, extraKey !== undefined);
  if (extraKey !== undefined) {
    keys.push(extraKey);
    keys.sort(compareBytes);
  }
  let text = `${stream}\n`;
  for (const key of keys) text += `${key}=${key === extraKey ? (extraValue as string) : (fields[key] as string)}\n`;
  return text;
}

/**
 * Canonical bytes of `_sig2`: `caracal-sig2\n`, then the stream key and every field but `_sig` and `_sig2`
 * (keys sorted by byte order), each string written as `<UTF-8 byte length>:<string>`. A length prefix
 * ends every key and value where it says, so no field text can be read as a boundary.
 */
export function canonicalTextV2(stream: string, fields: FieldRecord): string {
  const part = (text: string) => `${Buffer.byteLength(text, "utf8")}:${text}`;
  let text = `${V2_TAG}\n${part(stream)}`;
  for (const key of sortedKeys(fields, true)) text += part(key) + part(fields[key] as string);
  return text;
}

/**
 * Byte-order comparison of UTF-8 strings without encoding them (this runs for every signed and verified
 * entry). UTF-8 byte order is code point order; UTF-16 code unit order (JS `<`) differs from it only
 * when a surrogate (U+D800..DFFF, part of a code point above U+FFFF) meets a unit in U+E000..FFFF, so
 * those two ranges are swapped before comparing the first differing unit.
 */
function compareBytes(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

export function hmacHex(key: Buffer, bytes: Buffer | string): string {
  return typeof bytes === "string" ? hmacSha256Hex(key, bytes) : createHmac("sha256", key).update(bytes).digest("hex");
}

/**
 * Constant-time equality of a presented hex signature and the expected lowercase hex digest, in either
 * letter case (upstream's Go and TS verifiers accept upper-case hex). Lengths are public (64 hex
 * characters for SHA-256), so only equal lengths are compared; every character is visited, folded to
 * lower case arithmetically (no branch on the secret), and differences are OR-ed together with no early
 * exit. Comparing the hex strings directly avoids two Buffer allocations per entry on the consumer's hot
 * path (`timingSafeEqual` needs Buffers).
 */
export function hexEqualsConstantTime(presented: string, expectedHex: string): boolean {
  if (presented.length !== expectedHex.length) return false;
  let difference = 0;
  for (let i = 0; i < presented.length; i++) {
    const c = presented.charCodeAt(i);
    // 'A'..'F' (65..70) fold to 'a'..'f' by setting bit 0x20; digits already have it; any other
    // character stays different from every lowercase hex digit either way.
    const atLeastA = ((c - 65) >>> 31) ^ 1;
    const atMostF = ((70 - c) >>> 31) ^ 1;
    const upperHexLetter = atLeastA & atMostF;
    difference |= (c | (upperHexLetter << 5)) ^ expectedHex.charCodeAt(i);
  }
  return difference === 0;
}

/** Constant-time comparison of a presented hex signature with the expected digest bytes. */
export function hexDigestEquals(presented: string, expected: Buffer): boolean {
  // Lengths are public (always 64 hex chars for SHA-256); anything else cannot match.
  if (presented.length !== expected.length * 2 || !/^[0-9a-f]+$/.test(presented)) return false;
  return timingSafeEqual(Buffer.from(presented, "hex"), expected);
}

export type VerifyResult = "valid" | "missing" | "invalid";

/**
 * Signs with one current key and verifies against it and any previous keys (rotation: roll the signing
 * key, keep the old one in `previousKeys` until every entry signed with it has been consumed).
 */
export interface StreamSignerOptions {
  /**
   * Every producer sends `_sig2` (STREAMS_SIG2_REQUIRED): an entry without it is `missing`, so stripping
   * `_sig2` is no downgrade to the ambiguous `_sig` alone. Default false (upstream producers send `_sig` only).
   */
  requireV2?: boolean;
}

export class StreamSigner {
  private readonly verifyKeys: readonly Buffer[];
  readonly requireV2: boolean;

  constructor(
    private readonly signingKey: Buffer,
    previousKeys: readonly Buffer[] = [],
    options: StreamSignerOptions = {},
  ) {
    this.verifyKeys = [signingKey, ...previousKeys];
    this.requireV2 = options.requireV2 ?? false;
  }

  /** Parses `STREAMS_HMAC_KEY` and the comma-separated `STREAMS_HMAC_KEYS_PREVIOUS`. */
  static fromHex(keyHex: string, previousHex = "", variable = "STREAMS_HMAC_KEY", options: StreamSignerOptions = {}): StreamSigner {
    const problems: string[] = [];
    let key: Buffer | undefined;
    const previous: Buffer[] = [];
    try {
      key = parseHmacKey(keyHex, variable);
    } catch (e) {
      problems.push(...(e as ConfigError).problems);
    }
    previousHex
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0)
      .forEach((hex, i) => {
        try {
          previous.push(parseHmacKey(hex, `STREAMS_HMAC_KEYS_PREVIOUS[${i}]`));
        } catch (e) {
          problems.push(...(e as ConfigError).problems);
        }
      });
    if (problems.length > 0 || key === undefined) throw new ConfigError(problems);
    return new StreamSigner(key, previous, options);
  }

  /** `_sig` alone over the fields as given (WIRE §3), as an upstream producer signs. */
  sign(stream: string, fields: Readonly<Fields>): string {
    return hmacSha256Hex(this.signingKey, canonicalText(stream, fields));
  }

  /**
   * The two signatures of an entry: `_sig2` over the fields (any `_sig`/`_sig2` in them ignored), then
   * `_sig` over the fields with that `_sig2` among them, as upstream verifiers compute it.
   */
  signatures(stream: string, fields: Readonly<Fields>): { sig: string; sig2: string } {
    const sig2 = hmacSha256Hex(this.signingKey, canonicalTextV2(stream, fields));
    const sig = hmacSha256Hex(this.signingKey, canonicalTextWith(stream, fields, SIGNATURE_V2_FIELD, sig2));
    return { sig, sig2 };
  }

  /** Returns the fields with `_sig2` and `_sig` set (a copy; the input is not changed). */
  signFields(stream: string, fields: Readonly<Fields>): Fields {
    const { sig, sig2 } = this.signatures(stream, fields);
    const out: Fields = Object.create(null) as Fields;
    for (const k in fields) if (k !== SIGNATURE_FIELD && k !== SIGNATURE_V2_FIELD) out[k] = fields[k] as string;
    out[SIGNATURE_V2_FIELD] = sig2;
    out[SIGNATURE_FIELD] = sig;
    return out;
  }

  /**
   * `valid` when `_sig` matches (WIRE §3) and so does `_sig2` if present; `missing` without `_sig`, or
   * without `_sig2` when it is required; `invalid` otherwise. Every key is tried for each signature (no
   * early exit), so timing does not reveal which key matched.
   */
  verify(stream: string, fields: Readonly<Fields>): VerifyResult {
    const presented = fields[SIGNATURE_FIELD];
    if (presented === undefined || presented === "") return "missing";
    const presentedV2 = fields[SIGNATURE_V2_FIELD];
    const hasV2 = presentedV2 !== undefined && presentedV2 !== "";
    if (!hasV2 && this.requireV2) return "missing";
    const bytes = canonicalText(stream, fields);
    const bytesV2 = hasV2 ? canonicalTextV2(stream, fields) : undefined;
    let ok = false;
    let okV2 = !hasV2;
    for (const key of this.verifyKeys) {
      // digest("hex") is cheaper than digest() + Buffer.from(presented, "hex") per entry (bench:core).
      if (hexEqualsConstantTime(presented, hmacSha256Hex(key, bytes))) ok = true;
      if (bytesV2 !== undefined && hexEqualsConstantTime(presentedV2 as string, hmacSha256Hex(key, bytesV2))) okV2 = true;
    }
    return ok && okV2 ? "valid" : "invalid";
  }
}

/**
 * What a participant does about `_sig`: sign when it has a key, and whether a missing or wrong
 * signature is rejected (rc, stable) or accepted (dev).
 */
export interface SignaturePolicy {
  readonly mode: CaracalMode;
  readonly signer: StreamSigner | undefined;
}

/**
 * Builds the policy from environment-shaped settings. In rc/stable a missing key is a ConfigError;
 * in dev without a key, the caller must log loudly that messages go unsigned (see `describeSignaturePolicy`).
 */
export function signaturePolicy(settings: {
  mode: CaracalMode;
  keyHex?: string | undefined;
  previousKeysHex?: string | undefined;
  /** STREAMS_SIG2_REQUIRED: reject entries without `_sig2` (every producer of the deployment sends it). */
  requireSig2?: boolean | undefined;
}): SignaturePolicy {
  const keyHex = settings.keyHex?.trim() ?? "";
  if (keyHex === "") {
    if (settings.mode !== "dev") {
      throw new ConfigError([`STREAMS_HMAC_KEY: required when CARACAL_MODE=${settings.mode}`]);
    }
    return { mode: settings.mode, signer: undefined };
  }
  return { mode: settings.mode, signer: StreamSigner.fromHex(keyHex, settings.previousKeysHex ?? "", "STREAMS_HMAC_KEY", { requireV2: settings.requireSig2 ?? false }) };
}

/** True when this policy rejects entries whose `_sig` is missing or wrong. */
export function rejectsUnsigned(policy: SignaturePolicy): boolean {
  return policy.mode !== "dev";
}

/** A one-line description for the start-up log; never includes key material. */
export function describeSignaturePolicy(policy: SignaturePolicy): { level: "info" | "warn"; message: string } {
  if (policy.signer === undefined) {
    return {
      level: "warn",
      message: "STREAMS_HMAC_KEY is not set: CARACAL_MODE=dev, messages are published UNSIGNED and signatures are NOT verified",
    };
  }
  return rejectsUnsigned(policy)
    ? { level: "info", message: `stream signatures on: entries with a missing or wrong _sig are rejected (CARACAL_MODE=${policy.mode})` }
    : { level: "warn", message: "CARACAL_MODE=dev: entries are signed, but a missing or wrong _sig is accepted" };
}
