/**
 * Demo traffic: audit events through the AuditPublisher (as the STS would publish them) and outbox rows
 * through `enqueue` in their own transaction (as the API and Coordinator would write them), each at a
 * steady rate. Rates are kept on average: a tick that falls behind (backpressure, a slow database) is
 * caught up by the next ones.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { enqueue } from "@caracal/outbox";
import type { AuditEvent } from "@caracal/streams-core";
import type { Logger } from "pino";
import type pg from "pg";

/** What the generator publishes audit events into (an AuditPublisher). */
export interface AuditSink {
  publish(event: AuditEvent): Promise<void>;
}

export interface TrafficMetricsHooks {
  audit?(count: number): void;
  outbox?(topic: OutboxTopic): void;
  outboxError?(): void;
}

export interface TrafficOptions {
  audit: AuditSink;
  /** Where outbox rows are written; undefined or rate 0 writes none. */
  pool: pg.Pool | undefined;
  /** Audit events per second. */
  auditRate: number;
  /** Outbox rows per second. */
  outboxRate: number;
  zones: readonly string[];
  /** Scheduling granularity. Default 100 ms. */
  tickMs?: number;
  logger?: Logger;
  metrics?: TrafficMetricsHooks;
}

export interface TrafficStats {
  audit: number;
  outbox: number;
  outboxErrors: number;
}

export type OutboxTopic = "sessionsRevoke" | "policyInvalidate";

const EVENT_TYPES = ["token_exchange", "authz_decision", "token_exchange", "replay_detected"] as const;
const RESOURCES = ["resource://api", "resource://payments", "resource://files", "resource://search"] as const;

/** A schema-valid audit event; about one in seven is a deny. */
export function makeAuditEvent(zone: string, n: number): AuditEvent {
  const deny = n % 7 === 3;
  const policySet = `ps-${zone}`;
  return {
    id: randomUUID(),
    zone_id: zone,
    event_type: EVENT_TYPES[n % EVENT_TYPES.length] as string,
    request_id: `req-${randomUUID()}`,
    decision: deny ? "deny" : "allow",
    policy_set_id: policySet,
    policy_set_version_id: `${policySet}-v1`,
    manifest_sha: "sha256:3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
    evaluation_status: "complete",
    determining_policies_json: [{ id: deny ? "deny-outside-scope" : "baseline-resource-scope" }],
    diagnostics_json: [{ code: deny ? "scope_denied" : "scope_allowed" }],
    metadata_json: { client: `agent-${n % 11}`, resource: RESOURCES[n % RESOURCES.length], principal: "[redacted]" },
    occurred_at: new Date().toISOString(),
  };
}

/** Writes one outbox row in its own transaction, alternating revocations and policy invalidations. */
export async function writeOutboxRow(pool: pg.Pool, zone: string, n: number): Promise<OutboxTopic> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    let topic: OutboxTopic;
    if (n % 2 === 0) {
      topic = "sessionsRevoke";
      await enqueue(client, topic, { zone_id: zone, session_id: `sid-${randomUUID()}`, reason: "grant_revoked", grant_id: `grant-${n}` });
    } else {
      topic = "policyInvalidate";
      await enqueue(client, topic, { zone_id: zone, policy_set_id: `ps-${zone}`, policy_set_version_id: `ps-${zone}-v${n}`, shadow_version_id: "" });
    }
    await client.query("COMMIT");
    return topic;
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Runs until `signal` aborts; resolves with what was produced. Audit events are only accepted, not flushed. */
export async function runTraffic(options: TrafficOptions, signal: AbortSignal): Promise<TrafficStats> {
  const tickMs = options.tickMs ?? 100;
  const stats: TrafficStats = { audit: 0, outbox: 0, outboxErrors: 0 };
  const started = performance.now();
  let lastOutboxErrorLog = 0;
  while (!signal.aborted) {
    const elapsedS = (performance.now() - started) / 1000;
    const auditTarget = Math.floor(options.auditRate * elapsedS);
    const auditBefore = stats.audit;
    while (stats.audit < auditTarget && !signal.aborted) {
      const zone = options.zones[stats.audit % options.zones.length] as string;
      await options.audit.publish(makeAuditEvent(zone, stats.audit));
      stats.audit += 1;
    }
    if (stats.audit > auditBefore) options.metrics?.audit?.(stats.audit - auditBefore);
    if (options.pool !== undefined) {
      const outboxTarget = Math.floor(options.outboxRate * elapsedS);
      while (stats.outbox + stats.outboxErrors < outboxTarget && !signal.aborted) {
        const n = stats.outbox + stats.outboxErrors;
        try {
          // Not inlined into the optional call below: `a?.b?.(f())` would skip f() when there are no metrics.
          const topic = await writeOutboxRow(options.pool, options.zones[n % options.zones.length] as string, n);
          stats.outbox += 1;
          options.metrics?.outbox?.(topic);
        } catch (error) {
          stats.outboxErrors += 1;
          options.metrics?.outboxError?.();
          // One line per 10 s at most: a database outage would otherwise flood the log.
          if (performance.now() - lastOutboxErrorLog > 10_000) {
            lastOutboxErrorLog = performance.now();
            options.logger?.warn({ err: error }, "outbox row not written");
          }
        }
      }
    }
    await sleep(tickMs, undefined, { signal }).catch(() => undefined);
  }
  return stats;
}
