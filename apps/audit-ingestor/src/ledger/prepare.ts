/**
 * What the ledger needs of an event before its transaction: `content_sha256`, the zone lock key and the
 * COPY text of every column not assigned under the zone lock. No database code here: the verify worker
 * threads load this module (and nothing of pg or ioredis).
 */
import { hash } from "node:crypto";

import type { AuditEvent } from "@caracal/streams-core";
import { producerChainOf } from "@caracal/streams-core/audit-frame";
import { RejectedMessageError } from "@caracal/streams-core/errors";

import { contentSha256 } from "./content.js";
import { mayLosePrecision, rawTopLevelValues } from "./raw-json.js";

/** One event to store. `key` identifies it to the caller (a stream entry id, or a replay file line). */
export interface LedgerInput {
  readonly key: string;
  /**
   * The event as sent (`verifyAuditFrame`): `id`, `zone_id` and `occurred_at` are non-empty strings; any
   * other value may be of any JSON type.
   */
  readonly event: AuditEvent;
  /** The `data` text exactly as received (stored as `payload_json`, hashed after a plain JSON parse). */
  readonly data: string;
  /** `JSON.parse(data)` if the caller already has it (saves a second parse); parsed here otherwise. */
  readonly json?: unknown;
  readonly sig: string | undefined;
  readonly streamEntryId: string | undefined;
  /**
   * The event may already be stored (a redelivered stream entry, a replayed file): its batch looks its ids
   * up before the COPY instead of learning about them from a unique violation (see `writeOnce`).
   */
  readonly redelivered?: boolean;
}

/** The int4 advisory lock key of a zone: the first 4 bytes of SHA-256(zone_id), signed. */
export function zoneLockKey(zoneId: string): number {
  let key = zoneLockKeys.get(zoneId);
  if (key === undefined) {
    key = hash("sha256", zoneId, "buffer").readInt32BE(0);
    // Zones are few; the bound only keeps a flood of distinct zone ids from growing the map without end.
    if (zoneLockKeys.size >= 10_000) zoneLockKeys.clear();
    zoneLockKeys.set(zoneId, key);
  }
  return key;
}

const zoneLockKeys = new Map<string, number>();

/**
 * An event with everything that does not depend on its zone's head computed before its transaction
 * (`prepareLedgerInput`). Plain data (structured-clonable): a verify worker thread can build it.
 */
export interface PreparedEvent {
  readonly key: string;
  /** The fields of the event the ledger logic reads; the rest is already in `copyPrefix`. */
  readonly event: { readonly id: string; readonly zone_id: string; readonly chain?: { readonly producer: string; readonly seq: number; readonly prev: string } | undefined };
  readonly sig: string | undefined;
  readonly streamEntryId: string | undefined;
  readonly redelivered: boolean;
  readonly contentSha: string;
  readonly lockKey: number;
  /**
   * The COPY text of every column but the three assigned under the zone lock (see COPY_SQL), or that text
   * already encoded as UTF-8 (a verify worker sends a batch's prefixes as one transferred buffer).
   */
  readonly copyPrefix: string | Uint8Array;
}

/**
 * Hashes and formats an input for the ledger. Throws RejectedMessageError("parse_error") when its data
 * has no canonical form.
 */
export function prepareLedgerInput(input: LedgerInput): PreparedEvent {
  let contentSha: string;
  try {
    contentSha = contentSha256(input.json ?? JSON.parse(input.data));
  } catch (error) {
    throw error instanceof RejectedMessageError ? error : new RejectedMessageError("parse_error", String(error));
  }
  const e = input.event;
  return {
    key: input.key,
    event: { id: e.id, zone_id: e.zone_id, chain: producerChainOf(e) },
    sig: input.sig,
    streamEntryId: input.streamEntryId,
    redelivered: input.redelivered === true,
    contentSha,
    lockKey: zoneLockKey(e.zone_id),
    copyPrefix: copyPrefix(input, contentSha),
  };
}

/** Columns derived from the event; the sweeper checks stored columns against the same derivation. */
export function actorIdOf(event: Record<string, unknown>): string | null {
  const meta = event.metadata_json as Record<string, unknown> | undefined;
  const v = event.actor_id ?? meta?.actor_id ?? meta?.subject ?? meta?.application_id;
  return typeof v === "string" ? v : null;
}

export function resourceIdOf(event: Record<string, unknown>): string | null {
  const meta = event.metadata_json as Record<string, unknown> | undefined;
  const v = event.resource_id ?? meta?.resource_id ?? meta?.resource;
  return typeof v === "string" ? v : null;
}

/**
 * The last three columns are the ones assigned under the zone lock; everything before them is built
 * before the transaction (`copyPrefix`), so the locked part of a write formats only these.
 */
export const COPY_SQL = `COPY audit_events (
  id, zone_id, event_type, actor_id, resource_id, decision, evaluation_status, request_id,
  policy_set_id, policy_set_version_id, manifest_sha, payload_json, determining_policies_json,
  diagnostics_json, metadata_json, occurred_at, content_sha256,
  sig, producer_id, producer_seq, producer_prev, stream_entry_id,
  hmac_chain, tamper_detected, chain_seq
) FROM STDIN`;

/** COPY text format: NULL is \\N; backslash, tab, newline and carriage return are escaped. */
function copyValue(v: unknown): string {
  if (v === null || v === undefined) return "\\N";
  const text = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : typeof v === "boolean" ? (v ? "t" : "f") : String(v);
  return /[\\\t\n\r]/.test(text) ? text.replace(/[\\\t\n\r]/g, (c) => (c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r")) : text;
}

/** `copyValue` for a value known to hold no backslash, tab, newline or carriage return. */
function plainCopyValue(v: unknown): string {
  if (v === null || v === undefined) return "\\N";
  return typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : typeof v === "boolean" ? (v ? "t" : "f") : String(v);
}

const NEEDS_COPY_ESCAPE = /[\\\t\n\r]/;

/**
 * A text column holds the event's value when it is a JSON string, else NULL (the value stays in
 * `payload_json`): the verifier derives the column the same way (`ledger-verify.ts`).
 */
function textOf(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}

/**
 * A jsonb column holds the event's value exactly, whatever its JSON type: `null` as the JSON null (not
 * SQL NULL), an absent field as SQL NULL. Object keys such as `__proto__` are the parsed data's own keys.
 */
function jsonOf(v: unknown): string | undefined {
  return v === undefined ? undefined : JSON.stringify(v);
}

const JSON_COLUMNS: ReadonlySet<string> = new Set(["determining_policies_json", "diagnostics_json", "metadata_json"]);

/** The COPY text of a row's columns up to `stream_entry_id`, tab-terminated. */
function copyPrefix(input: LedgerInput, contentSha: string): string {
  // numbers beyond a double's precision: the jsonb columns take their text from `data`, exactly
  const raw = mayLosePrecision(input.data) ? rawTopLevelValues(input.data, JSON_COLUMNS) : undefined;
  const jsonColumn = (name: string, value: unknown) => raw?.get(name) ?? jsonOf(value);
  // the parsed data itself (the event's values exactly as sent), not a schema's output of it
  const e = (input.json ?? input.event) as Record<string, unknown> & AuditEvent;
  const c = producerChainOf(e);
  // The event's columns all come from the data text: a string in it, or JSON.stringify of a part of it.
  // JSON text holds no raw tab, newline or carriage return inside a string and writes a backslash in a
  // string as "\\\\"; JSON.stringify escapes only what such an escape stood for (a quote, a backslash, a
  // control character) and lone surrogates, which the content hash has already refused. So when `data` has
  // none of the four characters, no value taken from it has: one scan instead of one per column.
  const escape = NEEDS_COPY_ESCAPE.test(input.data) ? copyValue : plainCopyValue;
  return (
    `${escape(e.id)}\t${escape(e.zone_id)}\t${escape(textOf(e.event_type))}\t${escape(actorIdOf(e))}\t${escape(resourceIdOf(e))}\t` +
    `${escape(textOf(e.decision))}\t${escape(textOf(e.evaluation_status))}\t${escape(textOf(e.request_id))}\t${escape(textOf(e.policy_set_id))}\t` +
    `${escape(textOf(e.policy_set_version_id))}\t${escape(textOf(e.manifest_sha))}\t${escape(input.data)}\t${escape(jsonColumn("determining_policies_json", e.determining_policies_json))}\t` +
    `${escape(jsonColumn("diagnostics_json", e.diagnostics_json))}\t${escape(jsonColumn("metadata_json", e.metadata_json))}\t${escape(e.occurred_at)}\t${copyValue(contentSha)}\t` +
    // not taken from data: checked one by one
    `${copyValue(input.sig?.replaceAll("\u0000", ""))}\t${escape(c?.producer)}\t${escape(c?.seq)}\t${escape(c?.prev)}\t${copyValue(input.streamEntryId)}\t`
  );
}
