/**
 * Verification of audit frames before the ledger: the frame `sig`, JSON, the audit event schema, then
 * `content_sha256` and the row's COPY text (`prepareLedgerInput`). This is most of the ingest's CPU, so
 * it can run in worker threads (`VerifyPool`) while the main thread reads, writes and acks; `verifyEntries`
 * is the same work on the calling thread. Both give one outcome per entry, in order.
 */
import type { DeadLetterReason, Fields } from "@caracal/streams-core";
// light subpaths (zod and node:crypto only): worker threads load this module, and nothing of ioredis or pg
import { verifyAuditFrame } from "@caracal/streams-core/audit-frame";
import { RejectedMessageError, errorMessage } from "@caracal/streams-core/errors";

import type { PreparedEvent } from "../ledger/prepare.js";
import { prepareLedgerInput } from "../ledger/prepare.js";

/** One stream entry to verify. Plain data: it crosses to a worker thread by structured clone. */
export interface EntryToVerify {
  /** Stream entry id. */
  readonly id: string;
  readonly fields: Readonly<Fields>;
  /** Delivered before (delivery count > 1): the ledger looks its id up first. */
  readonly redelivered: boolean;
}

/**
 * `deviations`: fields of a stored event that break the published schema (counted, never rejected:
 * WIRE §6); empty for a conforming event.
 */
export type VerifyOutcome =
  | { readonly ok: true; readonly prepared: PreparedEvent; readonly deviations: readonly string[] }
  | { readonly ok: false; readonly reason: DeadLetterReason; readonly message: string };

/** Verifies and prepares entries on this thread. */
export function verifyEntries(entries: readonly EntryToVerify[], auditKey: Buffer | undefined): VerifyOutcome[] {
  return entries.map((entry) => {
    try {
      const v = verifyAuditFrame(entry.fields, auditKey);
      const prepared = prepareLedgerInput({
        key: entry.id,
        event: v.event,
        data: v.data,
        json: v.json,
        sig: v.frame.sig,
        streamEntryId: entry.id,
        redelivered: entry.redelivered,
      });
      return { ok: true, prepared, deviations: v.deviations };
    } catch (error) {
      if (error instanceof RejectedMessageError) return { ok: false, reason: error.reason, message: error.message };
      return { ok: false, reason: "parse_error", message: errorMessage(error) };
    }
  });
}

/**
 * The messages between `VerifyPool` and its workers: one flat array of strings and numbers per batch each
 * way. Structured clone copies such an array far more cheaply than an array of objects (no property names,
 * no object per entry or per outcome), and each side builds only the objects it uses.
 *
 * Entries: per entry `id, redelivered (1 | 0), field count n, n × (name, value)`.
 */
export function encodeEntries(entries: readonly EntryToVerify[]): Array<string | number> {
  // sized once (no copies as it grows); no array of names per entry
  let size = 0;
  for (const e of entries) {
    size += 3;
    for (const _name in e.fields) size += 2;
  }
  const out = new Array<string | number>(size);
  let at = 0;
  for (const e of entries) {
    out[at] = e.id;
    out[at + 1] = e.redelivered ? 1 : 0;
    const countAt = at + 2;
    at += 3;
    for (const name in e.fields) {
      out[at] = name;
      out[at + 1] = e.fields[name] as string;
      at += 2;
    }
    out[countAt] = (at - countAt - 1) / 2;
  }
  return out;
}

export function decodeEntries(flat: ReadonlyArray<string | number>): EntryToVerify[] {
  const entries: EntryToVerify[] = [];
  let i = 0;
  while (i < flat.length) {
    const id = flat[i] as string;
    const redelivered = flat[i + 1] === 1;
    const n = flat[i + 2] as number;
    i += 3;
    const fields: Fields = Object.create(null) as Fields;
    for (let f = 0; f < n; f++, i += 2) fields[flat[i] as string] = flat[i + 1] as string;
    entries.push({ id, fields, redelivered });
  }
  return entries;
}

/**
 * Outcomes: `flat` holds per outcome `0, reason, message` (rejected) or `1, key, event id, zone id, lock
 * key, content sha, COPY prefix length in bytes, sig, stream entry id, redelivered (1 | 0), chain producer,
 * chain seq, chain prev, deviations (comma-separated, or null)` with null for what is absent (the three
 * chain values are null together); `bytes`
 * holds the COPY prefixes, UTF-8, one after the other (possibly followed by unused bytes). The worker
 * transfers `bytes` (no copy): the main thread neither copies nor encodes the largest part of each row again.
 */
export interface EncodedOutcomes {
  readonly flat: Array<string | number | null>;
  readonly bytes: ArrayBuffer;
}

export function encodeOutcomes(outcomes: readonly VerifyOutcome[]): EncodedOutcomes {
  const flat: Array<string | number | null> = [];
  // One pass over the prefixes: each is written (flattened and encoded) straight into the buffer, whose
  // size is guessed from their UTF-16 lengths (UTF-8 of ASCII text, the usual case) plus some room; the
  // exact UTF-8 length is computed only for a prefix that might not fit, and the buffer grown if it does not.
  let capacity = COPY_BYTES_SLACK;
  for (const o of outcomes) if (o.ok) capacity += typeof o.prepared.copyPrefix === "string" ? o.prepared.copyPrefix.length : o.prepared.copyPrefix.length;
  // its own ArrayBuffer (never the shared pool of small Buffers), so that it can be transferred
  let bytes = new ArrayBuffer(capacity);
  let view = Buffer.from(bytes);
  let at = 0;
  for (const o of outcomes) {
    if (!o.ok) {
      flat.push(0, o.reason, o.message);
      continue;
    }
    const p = o.prepared;
    const c = p.event.chain;
    const prefix = typeof p.copyPrefix === "string" ? p.copyPrefix : Buffer.from(p.copyPrefix).toString("utf8");
    if (capacity - at < prefix.length * 3) {
      const needed = Buffer.byteLength(prefix, "utf8");
      if (capacity - at < needed) {
        capacity = Math.max(capacity * 2, at + needed + COPY_BYTES_SLACK);
        const grown = new ArrayBuffer(capacity);
        const grownView = Buffer.from(grown);
        grownView.set(view.subarray(0, at));
        bytes = grown;
        view = grownView;
      }
    }
    const length = view.write(prefix, at, "utf8");
    at += length;
    flat.push(1, p.key, p.event.id, p.event.zone_id, p.lockKey, p.contentSha, length, p.sig ?? null, p.streamEntryId ?? null, p.redelivered ? 1 : 0);
    if (c === undefined) flat.push(null, null, null);
    else flat.push(c.producer, c.seq, c.prev);
    flat.push(o.deviations.length > 0 ? o.deviations.join(",") : null);
  }
  return { flat, bytes };
}

/** Room beyond the prefixes' UTF-16 lengths in `encodeOutcomes`' buffer (a few rows of non-ASCII text). */
const COPY_BYTES_SLACK = 16 * 1024;

export function decodeOutcomes({ flat, bytes }: EncodedOutcomes): VerifyOutcome[] {
  const outcomes: VerifyOutcome[] = [];
  let at = 0;
  let i = 0;
  while (i < flat.length) {
    if (flat[i] === 0) {
      outcomes.push({ ok: false, reason: flat[i + 1] as DeadLetterReason, message: flat[i + 2] as string });
      i += 3;
      continue;
    }
    const producer = flat[i + 10];
    const length = flat[i + 6] as number;
    const copyPrefix = new Uint8Array(bytes, at, length);
    at += length;
    const prepared: PreparedEvent = {
      key: flat[i + 1] as string,
      event: {
        id: flat[i + 2] as string,
        zone_id: flat[i + 3] as string,
        chain: producer === null ? undefined : { producer: producer as string, seq: flat[i + 11] as number, prev: flat[i + 12] as string },
      },
      sig: (flat[i + 7] as string | null) ?? undefined,
      streamEntryId: (flat[i + 8] as string | null) ?? undefined,
      redelivered: flat[i + 9] === 1,
      contentSha: flat[i + 5] as string,
      lockKey: flat[i + 4] as number,
      copyPrefix,
    };
    const deviations = flat[i + 13];
    outcomes.push({ ok: true, prepared, deviations: typeof deviations === "string" ? deviations.split(",") : [] });
    i += 14;
  }
  return outcomes;
}

/** Where a batch is verified: on the calling thread, or in a pool of worker threads. */
export interface Verifier {
  verify(entries: readonly EntryToVerify[]): Promise<VerifyOutcome[]>;
  close(): Promise<void>;
}

export function inThreadVerifier(auditKey: Buffer | undefined): Verifier {
  return {
    verify: (entries) => Promise.resolve(verifyEntries(entries, auditKey)),
    close: () => Promise.resolve(),
  };
}
