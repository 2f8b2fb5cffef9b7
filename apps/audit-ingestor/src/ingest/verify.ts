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

export type VerifyOutcome = { readonly ok: true; readonly prepared: PreparedEvent } | { readonly ok: false; readonly reason: DeadLetterReason; readonly message: string };

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
      return { ok: true, prepared };
    } catch (error) {
      if (error instanceof RejectedMessageError) return { ok: false, reason: error.reason, message: error.message };
      return { ok: false, reason: "parse_error", message: errorMessage(error) };
    }
  });
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
