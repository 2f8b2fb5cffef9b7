/**
 * The two hashes of the ledger (WIRE §7): `content_sha256` of an event and the per-zone `hmac_chain`.
 * Both are pure functions of stored data, so the sweeper and `verify` recompute them from rows alone.
 */
import { createHash, createHmac } from "node:crypto";

import { RejectedMessageError } from "@caracal/streams-core";
import canonicalize from "canonicalize";

/**
 * hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the parsed `data` object. JCS makes the hash
 * independent of key order and number spelling, so the `payload_json` jsonb column (which reorders keys)
 * hashes to the same value as the `data` text that was received.
 */
export function contentSha256(parsed: unknown): string {
  let canonical: string | undefined;
  try {
    canonical = canonicalize(parsed);
  } catch (cause) {
    // lone surrogates, non-finite numbers: the event cannot have a canonical form
    throw new RejectedMessageError("parse_error", "audit data has no RFC 8785 canonical form", { cause });
  }
  if (canonical === undefined) throw new RejectedMessageError("parse_error", "audit data has no RFC 8785 canonical form");
  return createHash("sha256").update(canonical, "utf8").digest("hex");
}

/**
 * hmac_chain of row n = hex HMAC-SHA256(key, hmac_chain(n-1) || content_sha256(n)), "" before row 1.
 * Without AUDIT_HMAC_KEY (dev only) the link is an unkeyed SHA-256 of the same bytes: it still catches an
 * accidental change, but anyone can forge it (the seed: "chain verification is skipped" in dev).
 */
export function chainLink(key: Buffer | undefined, previousChain: string, contentSha: string): string {
  const h = key === undefined ? createHash("sha256") : createHmac("sha256", key);
  return h.update(previousChain, "utf8").update(contentSha, "utf8").digest("hex");
}
