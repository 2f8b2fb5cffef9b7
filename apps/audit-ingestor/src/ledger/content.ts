/**
 * The two hashes of the ledger (WIRE §7): `content_sha256` of an event and the per-zone `hmac_chain`.
 * Both are pure functions of stored data, so the sweeper and `verify` recompute them from rows alone.
 */
import { hash } from "node:crypto";

import { hmacSha256Hex } from "@caracal/streams-core/audit-frame";

// the light subpath: verify worker threads load this module
import { RejectedMessageError } from "@caracal/streams-core/errors";

/** Deeper `data` is rejected rather than canonicalized (an audit event is a few levels deep). */
export const MAX_JSON_DEPTH = 256;

/**
 * hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the parsed `data` object. JCS makes the hash
 * independent of key order and number spelling, so the `payload_json` jsonb column (which reorders keys)
 * hashes to the same value as the `data` text that was received.
 */
export function contentSha256(parsed: unknown): string {
  return hash("sha256", canonicalJson(parsed), "hex");
}

/**
 * RFC 8785 canonical JSON of a value produced by `JSON.parse` (or pg's jsonb parser): object members
 * sorted by UTF-16 code units (the default `sort`), strings and numbers as ECMAScript `JSON.stringify`
 * writes them, no whitespace. Throws RejectedMessageError("parse_error") for what has no canonical form:
 * a lone surrogate, a non-finite number, nesting deeper than MAX_JSON_DEPTH, or a value JSON cannot hold.
 * Equivalent to the `canonicalize` package on JSON values (property-tested), about 1.1x faster
 * (`pnpm bench:audit-costs`) because it skips the `toJSON`/cycle handling that parsed JSON never needs.
 */
export function canonicalJson(value: unknown): string {
  const sorted = sortedCopy(value, 0);
  return sorted === NOT_ORDERABLE ? write(value, 0) : JSON.stringify(sorted);
}

/** `sortedCopy`'s answer for a value whose objects cannot hold their members in canonical order. */
const NOT_ORDERABLE: unique symbol = Symbol("not orderable");

/**
 * The fast path of `canonicalJson`: checks everything `write` checks (lone surrogates, non-finite
 * numbers, depth, non-JSON values: same errors) and returns the value with every object's members
 * inserted in RFC 8785 order (an object already in that order, with children unchanged, is returned as
 * is), so that the native `JSON.stringify` writes the canonical text: it keeps insertion order and writes
 * strings and numbers exactly as RFC 8785 says (RFC 8785 §3.2.2 defines them by `JSON.stringify`).
 * JavaScript objects enumerate array-index keys ("0", "17") first in numeric order whatever the insertion
 * order, and `__proto__` cannot be inserted as a plain member: an object with a key starting with a digit
 * or named `__proto__` gives NOT_ORDERABLE, and `write` does the whole value instead.
 */
function sortedCopy(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case "string":
      if (!value.isWellFormed()) throw noCanonicalForm("a string has a lone surrogate");
      return value;
    case "number":
      if (!Number.isFinite(value)) throw noCanonicalForm("a number is not finite");
      return value;
    case "boolean":
      return value;
    case "object": {
      if (value === null) return null;
      if (depth >= MAX_JSON_DEPTH) throw noCanonicalForm(`nesting deeper than ${MAX_JSON_DEPTH}`);
      if (Array.isArray(value)) {
        let copy: unknown[] | undefined;
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          const c = sortedCopy(item, depth + 1);
          if (c === NOT_ORDERABLE) return NOT_ORDERABLE;
          if (c !== item) (copy ??= value.slice())[i] = c;
        }
        return copy ?? value;
      }
      const object = value as Record<string, unknown>;
      const keys = Object.keys(object);
      let inOrder = true;
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i] as string;
        const first = key.charCodeAt(0);
        if ((first >= 48 && first <= 57) || key === "__proto__") return NOT_ORDERABLE;
        if (!key.isWellFormed()) throw noCanonicalForm("a key has a lone surrogate");
        if (i > 0 && (keys[i - 1] as string) > key) inOrder = false;
      }
      if (!inOrder) keys.sort();
      const children: unknown[] = new Array(keys.length);
      // anything but a plain object is copied into one: JSON.stringify would call an inherited toJSON
      const proto: unknown = Object.getPrototypeOf(object);
      let changed = !inOrder || (proto !== Object.prototype && proto !== null);
      for (let i = 0; i < keys.length; i++) {
        const v = object[keys[i] as string];
        const c = sortedCopy(v, depth + 1);
        if (c === NOT_ORDERABLE) return NOT_ORDERABLE;
        children[i] = c;
        if (c !== v) changed = true;
      }
      if (!changed) return value;
      const copy: Record<string, unknown> = {};
      for (let i = 0; i < keys.length; i++) copy[keys[i] as string] = children[i];
      return copy;
    }
    default:
      throw noCanonicalForm(`a ${typeof value} is not JSON`);
  }
}

function write(value: unknown, depth: number): string {
  switch (typeof value) {
    case "string":
      if (!value.isWellFormed()) throw noCanonicalForm("a string has a lone surrogate");
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw noCanonicalForm("a number is not finite");
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "object": {
      if (value === null) return "null";
      if (depth >= MAX_JSON_DEPTH) throw noCanonicalForm(`nesting deeper than ${MAX_JSON_DEPTH}`);
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) out += (i === 0 ? "" : ",") + write(value[i], depth + 1);
        return `${out}]`;
      }
      const object = value as Record<string, unknown>;
      const keys = Object.keys(object).sort();
      let out = "{";
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i] as string;
        if (!key.isWellFormed()) throw noCanonicalForm("a key has a lone surrogate");
        out += `${i === 0 ? "" : ","}${JSON.stringify(key)}:${write(object[key], depth + 1)}`;
      }
      return `${out}}`;
    }
    default:
      throw noCanonicalForm(`a ${typeof value} is not JSON`);
  }
}

function noCanonicalForm(why: string): RejectedMessageError {
  return new RejectedMessageError("parse_error", `audit data has no RFC 8785 canonical form: ${why}`);
}

/**
 * hmac_chain of row n = hex HMAC-SHA256(key, hmac_chain(n-1) || content_sha256(n)), "" before row 1.
 * Without AUDIT_HMAC_KEY (dev only) the link is an unkeyed SHA-256 of the same bytes: it still catches an
 * accidental change, but anyone can forge it (the seed: "chain verification is skipped" in dev).
 */
export function chainLink(key: Buffer | undefined, previousChain: string, contentSha: string): string {
  if (key === undefined) return hash("sha256", previousChain + contentSha, "hex");
  return hmacSha256Hex(key, previousChain + contentSha);
}
