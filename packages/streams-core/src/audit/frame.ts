/**
 * The audit frame on `caracal.audit.events` (WIRE §6): `id`, `data` (the event as JSON text), `sig`
 * (hex HMAC-SHA256 of the `data` bytes as sent, with AUDIT_HMAC_KEY), optionally `_sig` and `outbox_id`.
 */

import type { Fields } from "../codec.js";
import { RejectedMessageError } from "../errors.js";
import type { AuditEvent, AuditFrame } from "../schemas.js";
import { auditEventSchema, auditFrameSchema, formatIssues, producerChainSchema } from "../schemas.js";
import { hmacSha256Hex } from "../hmac.js";

// the ledger's hmac_chain uses the same HMAC from worker threads, which load only this light subpath
export { hmacSha256Hex } from "../hmac.js";
import { hexEqualsConstantTime } from "../signing.js";

/** hex HMAC-SHA256(AUDIT_HMAC_KEY, data bytes). */
export function signAuditData(auditKey: Buffer, data: string): string {
  return hmacSha256Hex(auditKey, data);
}

/** Builds the frame fields for an event. `data` is serialized once; `sig` covers exactly those bytes. */
export function encodeAuditFrame(event: AuditEvent, auditKey: Buffer | undefined): Fields {
  const data = JSON.stringify(event);
  const fields: Fields = { id: event.id, data };
  if (auditKey !== undefined) fields.sig = signAuditData(auditKey, data);
  return fields;
}

export interface VerifiedAuditFrame {
  readonly frame: AuditFrame;
  /**
   * The event as sent (`JSON.parse` of `data`, NUL characters removed), typed as the published schema
   * types it; only `id`, `zone_id` and `occurred_at` are guaranteed. Every other value is kept exactly as
   * sent, whatever its type: `deviations` names the fields that break the published schema.
   */
  readonly event: AuditEvent;
  /** The `data` text as stored: as received, or re-serialized once NUL characters were removed. */
  readonly data: string;
  /** The parsed `data` (the same object as `event`): what the content hash covers. */
  readonly json: unknown;
  /**
   * Top-level fields that deviate from the published event schema (`decision: "pending"`, `null` policy
   * lists, ...), plus `nul_stripped` when NUL characters were removed. Stored anyway (WIRE §6): counted,
   * never dead-lettered.
   */
  readonly deviations: readonly string[];
}

const REQUIRED_TEXT = ["id", "zone_id", "occurred_at"] as const;

/**
 * Verifies and parses a frame, accepting what upstream producers really send (WIRE §6): the frame's `sig`
 * covers `data`; `data` must be a JSON object with non-empty string `id`, `zone_id` and `occurred_at`
 * (upstream's ingestor requires only these); the event's identity is `data.id` whatever the frame's `id`
 * says. Throws RejectedMessageError with reason `signature_missing`, `signature_invalid`, `parse_error`
 * or `schema_invalid`. With no audit key, `sig` is not checked (development mode, seed: "If
 * AUDIT_HMAC_KEY is not set, chain verification is skipped").
 */
export function verifyAuditFrame(fields: Readonly<Fields>, auditKey: Buffer | undefined): VerifiedAuditFrame {
  const frameResult = auditFrameSchema.safeParse(fields);
  if (!frameResult.success) throw new RejectedMessageError("schema_invalid", `audit frame: ${formatIssues(frameResult.error)}`);
  const frame = frameResult.data;
  if (auditKey !== undefined) {
    if (frame.sig === undefined || frame.sig === "") throw new RejectedMessageError("signature_missing", "audit frame has no sig");
    // hex digest compared as strings in constant time: no Buffer per entry (same answer as decoding `sig`)
    const expected = hmacSha256Hex(auditKey, frame.data);
    if (!hexEqualsConstantTime(frame.sig, expected)) throw new RejectedMessageError("signature_invalid", "audit frame sig does not match data");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(frame.data);
  } catch (cause) {
    throw new RejectedMessageError("parse_error", "audit frame data is not JSON", { cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new RejectedMessageError("schema_invalid", "audit event: data is not a JSON object");
  }
  const deviations: string[] = [];
  let data = frame.data;
  // JSON text writes a NUL only as the escape \u0000; PostgreSQL's text and jsonb refuse it.
  if (data.includes("\\u0000")) {
    const stripped = withoutNul(parsed);
    const text = JSON.stringify(stripped);
    // "\\u0000" (an escaped backslash, then "u0000") is no NUL: then nothing changed
    if (text !== JSON.stringify(parsed)) {
      parsed = stripped;
      data = text;
      deviations.push("nul_stripped");
    }
  }
  const event = parsed as Record<string, unknown>;
  for (const name of REQUIRED_TEXT) {
    const v = event[name];
    if (typeof v !== "string" || v === "") throw new RejectedMessageError("schema_invalid", `audit event: ${name} must be a non-empty string`);
  }
  if (event.chain !== undefined && !producerChainSchema.safeParse(event.chain).success) {
    // a malformed producer chain is kept in the payload but not followed
    deviations.push("chain");
  }
  const published = auditEventSchema.safeParse(event);
  if (!published.success) {
    for (const issue of published.error.issues) {
      const field = String(issue.path[0] ?? "(event)");
      if (!deviations.includes(field)) deviations.push(field);
    }
  }
  if (typeof frame.id === "string" && frame.id !== event.id) deviations.push("frame_id");
  return { frame, event: event as unknown as AuditEvent, data, json: parsed, deviations };
}

/** A JSON value with every NUL character removed from its strings and object keys. */
function withoutNul(value: unknown): unknown {
  if (typeof value === "string") return value.replaceAll("\u0000", "");
  if (Array.isArray(value)) return value.map(withoutNul);
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k.replaceAll("\u0000", ""), { value: withoutNul(v), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return value;
}

/** The producer chain of an event, when it is well formed (`verifyAuditFrame` reports a malformed one). */
export function producerChainOf(event: { chain?: unknown }): { producer: string; seq: number; prev: string } | undefined {
  const r = producerChainSchema.safeParse(event.chain);
  return r.success ? r.data : undefined;
}
