/**
 * `--tamper`: what an attacker or a fault does to the event streams and the ledger, on a timer, so that
 * users of the demo can watch detection work. Each kind, once per round, logged and counted:
 * - `forge`: an audit frame whose `sig` was made with another key, and a session revocation whose `_sig`
 *   was made with another key. The audit ingestor and the revocation consumer dead-letter them
 *   (`signature_invalid`); nothing forged is stored or applied.
 * - `drop`: a producer chain with a missing link (seq 1, then seq 3): the audit ingestor stores both and
 *   raises a `gap` once the grace time passes (ledger verify, sweeper).
 * - `alter`: one stored audit row's decision flipped by SQL: the tamper sweeper and `audit verify` report
 *   `changed`.
 * - `delete`: one stored audit row deleted from the middle of a zone's chain: reported as `deleted`.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import type { RedisClient } from "@caracal/streams-core";
import { StreamSigner, Topics, encodeFields, signAuditData, streamKey } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";

import { makeAuditEvent } from "./traffic.js";

export const TAMPER_KINDS = ["forge", "drop", "alter", "delete"] as const;
export type TamperKind = (typeof TAMPER_KINDS)[number];

/** Parses `--tamper` / TRAFFIC_TAMPER: a comma list of kinds, `all`, or empty for none. */
export function parseTamperKinds(text: string | undefined): TamperKind[] {
  if (text === undefined || text.trim() === "") return [];
  const words = text.split(",").map((w) => w.trim()).filter((w) => w !== "");
  if (words.includes("all")) return [...TAMPER_KINDS];
  const unknown = words.filter((w) => !(TAMPER_KINDS as readonly string[]).includes(w));
  if (unknown.length > 0) throw new Error(`unknown tamper kind(s) ${unknown.join(", ")}: use ${TAMPER_KINDS.join(", ")} or all`);
  return [...new Set(words as TamperKind[])];
}

export interface TamperOptions {
  kinds: readonly TamperKind[];
  everyMs: number;
  redis: RedisClient;
  pool: pg.Pool | undefined;
  keyPrefix: string;
  /** The real audit key: `drop` frames are genuine, only their chain has a hole. */
  auditKey: Buffer | undefined;
  zones: readonly string[];
  logger: Logger;
  onTamper?: (kind: TamperKind) => void;
}

export async function runTamper(options: TamperOptions, signal: AbortSignal): Promise<void> {
  if (options.kinds.length === 0) return;
  let round = 0;
  while (!signal.aborted) {
    await sleep(options.everyMs, undefined, { signal }).catch(() => undefined);
    if (signal.aborted) break;
    const zone = options.zones[round++ % options.zones.length] as string;
    for (const kind of options.kinds) {
      try {
        const what = await TAMPER[kind](options, zone);
        if (what !== undefined) {
          options.onTamper?.(kind);
          options.logger.warn({ tamper: kind, zone, ...what }, `tampered (${kind}): watch it being detected`);
        }
      } catch (error) {
        options.logger.warn({ err: error, tamper: kind }, "tampering failed");
      }
    }
  }
}

type Tamper = (options: TamperOptions, zone: string) => Promise<Record<string, unknown> | undefined>;

const TAMPER: Record<TamperKind, Tamper> = {
  async forge({ redis, keyPrefix }, zone) {
    const wrongKey = randomBytes(32);
    const event = makeAuditEvent(zone, 0);
    const data = JSON.stringify(event);
    const auditId = await redis.xadd(streamKey(Topics.auditEvents.stream, keyPrefix), "*", "id", event.id, "data", data, "sig", signAuditData(wrongKey, data));
    const revoke = Topics.sessionsRevoke.stream;
    const fields = encodeFields({ zone_id: zone, reason: "forged", session_id: `forged-${randomUUID()}` });
    const signed = new StreamSigner(wrongKey).signFields(revoke, fields);
    const revokeId = await redis.xadd(streamKey(revoke, keyPrefix), "*", ...Object.entries(signed).flat());
    return { auditEntry: auditId, revocationEntry: revokeId };
  },
  async drop({ redis, keyPrefix, auditKey }, zone) {
    if (auditKey === undefined) return undefined;
    const producer = `tamper-${randomUUID()}`;
    const stream = streamKey(Topics.auditEvents.stream, keyPrefix);
    let prev = "";
    for (const seq of [1, 3]) {
      const event = { ...makeAuditEvent(zone, seq), chain: { producer, seq, prev } };
      const data = JSON.stringify(event);
      const sig = signAuditData(auditKey, data);
      await redis.xadd(stream, "*", "id", event.id, "data", data, "sig", sig);
      prev = sig;
    }
    return { producer, missingSeq: 2 };
  },
  async alter({ pool }, zone) {
    if (pool === undefined) return undefined;
    const { rows } = await pool.query<{ id: string }>(
      `UPDATE audit_events SET decision = CASE decision WHEN 'allow' THEN 'deny' ELSE 'allow' END
        WHERE id = (SELECT id FROM audit_events WHERE zone_id = $1 AND hmac_chain IS NOT NULL ORDER BY chain_seq DESC OFFSET 20 LIMIT 1)
        RETURNING id`,
      [zone],
    );
    return rows[0] === undefined ? undefined : { eventId: rows[0].id };
  },
  async delete({ pool }, zone) {
    if (pool === undefined) return undefined;
    const { rows } = await pool.query<{ id: string; chain_seq: string }>(
      `DELETE FROM audit_events
        WHERE id = (SELECT id FROM audit_events WHERE zone_id = $1 AND hmac_chain IS NOT NULL ORDER BY chain_seq DESC OFFSET 30 LIMIT 1)
        RETURNING id, chain_seq`,
      [zone],
    );
    return rows[0] === undefined ? undefined : { eventId: rows[0].id, chainSeq: rows[0].chain_seq };
  },
};
