/**
 * The audit frame on `caracal.audit.events` (WIRE §6): `id`, `data` (the event as JSON text), `sig`
 * (hex HMAC-SHA256 of the `data` bytes as sent, with AUDIT_HMAC_KEY), optionally `_sig` and `outbox_id`.
 */
import { createHmac } from "node:crypto";

import type { Fields } from "../codec.js";
import { RejectedMessageError } from "../errors.js";
import type { AuditEvent, AuditFrame } from "../schemas.js";
import { auditEventSchema, auditFrameSchema, formatIssues } from "../schemas.js";
import { hexEqualsConstantTime } from "../signing.js";

/** hex HMAC-SHA256(AUDIT_HMAC_KEY, data bytes). */
export function signAuditData(auditKey: Buffer, data: string): string {
  return createHmac("sha256", auditKey).update(data, "utf8").digest("hex");
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
  readonly event: AuditEvent;
  /** The `data` text exactly as received. */
  readonly data: string;
  /**
   * `JSON.parse(data)` before schema validation: what a content hash covers (the schema's output may
   * differ from it, e.g. by defaults), kept so that consumers do not parse the text a second time.
   */
  readonly json: unknown;
}

/**
 * Verifies and parses a frame. Throws RejectedMessageError with reason `signature_missing`,
 * `signature_invalid`, `parse_error` or `schema_invalid`. With no audit key, `sig` is not checked
 * (development mode, seed: "If AUDIT_HMAC_KEY is not set, chain verification is skipped").
 */
export function verifyAuditFrame(fields: Readonly<Fields>, auditKey: Buffer | undefined): VerifiedAuditFrame {
  const frameResult = auditFrameSchema.safeParse(fields);
  if (!frameResult.success) throw new RejectedMessageError("schema_invalid", `audit frame: ${formatIssues(frameResult.error)}`);
  const frame = frameResult.data;
  if (auditKey !== undefined) {
    if (frame.sig === undefined || frame.sig === "") throw new RejectedMessageError("signature_missing", "audit frame has no sig");
    // hex digest compared as strings in constant time: no Buffer per entry (same answer as decoding `sig`)
    const expected = createHmac("sha256", auditKey).update(frame.data, "utf8").digest("hex");
    if (!hexEqualsConstantTime(frame.sig, expected)) throw new RejectedMessageError("signature_invalid", "audit frame sig does not match data");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(frame.data);
  } catch (cause) {
    throw new RejectedMessageError("parse_error", "audit frame data is not JSON", { cause });
  }
  const eventResult = auditEventSchema.safeParse(parsed);
  if (!eventResult.success) throw new RejectedMessageError("schema_invalid", `audit event: ${formatIssues(eventResult.error)}`);
  if (eventResult.data.id !== frame.id) {
    throw new RejectedMessageError("schema_invalid", `audit frame id ${frame.id} differs from data.id ${eventResult.data.id}`);
  }
  return { frame, event: eventResult.data, data: frame.data, json: parsed };
}
