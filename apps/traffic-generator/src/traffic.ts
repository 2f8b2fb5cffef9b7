/**
 * Demo traffic: audit events through the AuditPublisher (as the STS would publish them) and outbox rows
 * through `enqueue` in their own transaction (as the API and Coordinator would write them), each at a
 * steady rate. Rates are kept on average: a tick that falls behind (backpressure, a slow database) is
 * caught up by the next ones.
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { activatePolicySetVersion, enqueue, manifestSha256 } from "@caracal/outbox";
import type { AuditEvent } from "@caracal/streams-core";
import { Topics } from "@caracal/streams-core";
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
  /** Outbox rows per second, spread over every outbox topic in turn. */
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

export type OutboxTopic = "sessionsRevoke" | "policyInvalidate" | "keysInvalidate" | "agentsLifecycle" | "invocationsLifecycle" | "delegationsInvalidate";

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

/**
 * Plays every outbox producer of upstream Caracal in turn, one row per call, each in its own transaction
 * (as the API and the Coordinator write them; agent and invocation lifecycles go to the Coordinator's own
 * table `caracal_outbox` where it exists, as upstream's Coordinator writes them): session revocations over every anchor (session, sid with
 * root_sid, agent session, delegation edge), policy invalidations, key invalidations, agent lifecycles
 * (spawn, suspend, resume, terminate, in that order per session), invocation lifecycles (created,
 * started, completed) and delegation edge events with a per-zone epoch that only rises.
 */
export class OutboxProducers {
  private n = 0;
  private readonly sessions = new Map<string, { id: string; step: number }[]>();
  private readonly invocations = new Map<string, { id: string; service: string; step: number }[]>();
  private readonly epochs = new Map<string, number>();

  /** Writes the next row: every topic in turn, each round of topics in the next zone. */
  async writeNext(pool: pg.Pool, zones: readonly string[]): Promise<OutboxTopic> {
    const n = this.n++;
    const zone = zones[Math.floor(n / 6) % zones.length] as string;
    const [topic, fields] = this.next(zone, n);
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      // a policy change is an activation where upstream's policy tables exist (the policy-invalidator then
      // builds real bundles), else the invalidation alone
      if (topic === "policyInvalidate" && (await this.policyTables(client))) {
        const count = this.activations.get(zone) ?? 0;
        this.activations.set(zone, count + 1);
        await activateDemoPolicy(client, zone, count % 2 === 0 ? "v1" : "v2");
      } else if ((topic === "agentsLifecycle" || topic === "invocationsLifecycle") && (await this.coordinatorOutbox(client))) {
        // as upstream's Coordinator writes them: its own outbox table, deduplicated by dedupe_key
        await client.query(
          `INSERT INTO caracal_outbox (id, producer, topic, dedupe_key, payload_json) VALUES ($1, 'coordinator', $2, $3, $4::jsonb)
           ON CONFLICT (producer, topic, dedupe_key) DO NOTHING`,
          [randomUUID(), Topics[topic].stream, `${fields.event}:${fields.agent_session_id ?? fields.invocation_id}`, JSON.stringify(fields)],
        );
      } else await enqueue(client, topic, fields as never);
      await client.query("COMMIT");
      return topic;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  private hasPolicyTables: boolean | undefined;
  private hasCoordinatorOutbox: boolean | undefined;

  private async coordinatorOutbox(client: pg.PoolClient): Promise<boolean> {
    if (this.hasCoordinatorOutbox === undefined) {
      const { rows } = await client.query<{ ok: boolean }>("SELECT to_regclass('caracal_outbox') IS NOT NULL AS ok");
      this.hasCoordinatorOutbox = rows[0]?.ok === true;
    }
    return this.hasCoordinatorOutbox;
  }
  private readonly activations = new Map<string, number>();

  private async policyTables(client: pg.PoolClient): Promise<boolean> {
    if (this.hasPolicyTables === undefined) {
      const { rows } = await client.query<{ ok: boolean }>("SELECT to_regclass('policy_set_bindings') IS NOT NULL AS ok");
      this.hasPolicyTables = rows[0]?.ok === true;
    }
    return this.hasPolicyTables;
  }

  private next(zone: string, n: number): [OutboxTopic, Record<string, string>] {
    switch (n % 6) {
      case 0:
        return ["sessionsRevoke", revocation(zone, n / 6)];
      case 1:
        return ["policyInvalidate", { zone_id: zone, policy_set_id: `ps-${zone}`, policy_set_version_id: `ps-${zone}-v${n}`, shadow_version_id: "" }];
      case 2:
        return ["keysInvalidate", { zone_id: zone, key_id: `key-${zone}-${Math.floor(n / 6)}`, reason: "rotated" }];
      case 3:
        return ["agentsLifecycle", this.lifecycle(zone)];
      case 4:
        return ["invocationsLifecycle", this.invocation(zone)];
      default: {
        const epoch = (this.epochs.get(zone) ?? 0) + 1;
        this.epochs.set(zone, epoch);
        const event = epoch % 3 === 0 ? "edge_revoke" : "edge_create";
        return ["delegationsInvalidate", { event, zone_id: zone, epoch: String(epoch), delegation_edge_id: `edge-${zone}-${epoch}` }];
      }
    }
  }

  private lifecycle(zone: string): Record<string, string> {
    const live = this.sessions.get(zone) ?? [];
    this.sessions.set(zone, live);
    const events = ["spawn", "suspend", "resume", "terminate"] as const;
    // a new session while fewer than three are alive, else the oldest one's next step
    const session = live.length < 3 ? { id: `as-${randomUUID()}`, step: 0 } : (live[0] as { id: string; step: number });
    if (session.step === 0) live.push(session);
    const event = events[session.step] as string;
    session.step += 1;
    if (session.step === events.length) live.shift();
    return { event, zone_id: zone, agent_session_id: session.id, application_id: `app-${zone}`, occurred_at: new Date().toISOString() };
  }

  private invocation(zone: string): Record<string, string> {
    const open = this.invocations.get(zone) ?? [];
    this.invocations.set(zone, open);
    const states = ["created", "started", "completed"] as const;
    const inv = open.length < 2 ? { id: `inv-${randomUUID()}`, service: `svc-${open.length + 1}`, step: 0 } : (open[0] as { id: string; service: string; step: number });
    if (inv.step === 0) open.push(inv);
    const state = states[inv.step] as string;
    inv.step += 1;
    if (inv.step === states.length) open.shift();
    return { event: `invocation.${state}`, zone_id: zone, invocation_id: inv.id, service_id: inv.service, status: state };
  }
}

/**
 * Activates the next version of the zone's demo policy set, as upstream's API does: the zone, two Rego
 * modules and two set versions are created once (idempotently), and the activation alternates between
 * them (`activatePolicySetVersion`: manifest checked, binding switched, `caracal.policy.invalidate`
 * enqueued in the same transaction).
 */
async function activateDemoPolicy(client: pg.PoolClient, zone: string, version: "v1" | "v2"): Promise<void> {
  const id = (what: string) => `demo-${zone}-${what}`;
  const modules = [
    ["pv-base", "package caracal.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.scope == \"read\"\n"],
    ["pv-extra", "package caracal.authz.extra\n\nimport rego.v1\n\ndeny_reasons contains \"outside_hours\" if input.hour > 22\n"],
  ] as const;
  await client.query("INSERT INTO zones (id, name, slug) VALUES ($1, $1, $1) ON CONFLICT DO NOTHING", [zone]);
  await client.query("INSERT INTO policies (id, zone_id, name, created_by) VALUES ($1, $2, 'demo', 'traffic-generator') ON CONFLICT DO NOTHING", [id("policy"), zone]);
  for (const [pv, content] of modules) {
    await client.query(
      `INSERT INTO policy_versions (id, policy_id, version, content, content_sha256, schema_version, created_by)
       VALUES ($1, $2, $3, $4, encode(sha256(convert_to($4, 'UTF8')), 'hex'), 'v1', 'traffic-generator') ON CONFLICT DO NOTHING`,
      [id(pv), id("policy"), pv === "pv-base" ? 1 : 2, content],
    );
  }
  await client.query("INSERT INTO policy_sets (id, zone_id, name, created_by) VALUES ($1, $2, 'demo', 'traffic-generator') ON CONFLICT DO NOTHING", [id("set"), zone]);
  const versions = [
    ["v1", [id("pv-base")]],
    ["v2", [id("pv-base"), id("pv-extra")]],
  ] as const;
  for (const [v, ids] of versions) {
    const manifest = ids.map((policy_version_id) => ({ policy_version_id }));
    await client.query(
      `INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, schema_version, created_by)
       VALUES ($1, $2, $3, $4::jsonb, $5, 'v1', 'traffic-generator') ON CONFLICT DO NOTHING`,
      [id(`set-${v}`), id("set"), v === "v1" ? 1 : 2, JSON.stringify(manifest), manifestSha256(manifest)],
    );
  }
  await client.query("INSERT INTO policy_set_bindings (zone_id, policy_set_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", [zone, id("set")]);
  await activatePolicySetVersion(client, zone, id("set"), id(`set-${version}`));
}

/** A revocation on one of the anchors upstream producers use, in turn. */
function revocation(zone: string, n: number): Record<string, string> {
  const base = { zone_id: zone, reason: "grant_revoked", grant_id: `grant-${n}` };
  switch (n % 4) {
    case 0:
      return { ...base, session_id: `sid-${randomUUID()}` };
    case 1:
      return { ...base, sid: `sid-${randomUUID()}`, root_sid: `root-${randomUUID()}` };
    case 2:
      return { ...base, agent_session_id: `as-${randomUUID()}` };
    default:
      return { ...base, reason: "delegation_revoked", delegation_edge_id: `edge-${randomUUID()}` };
  }
}

/** Runs until `signal` aborts; resolves with what was produced. Audit events are only accepted, not flushed. */
export async function runTraffic(options: TrafficOptions, signal: AbortSignal): Promise<TrafficStats> {
  const tickMs = options.tickMs ?? 100;
  const stats: TrafficStats = { audit: 0, outbox: 0, outboxErrors: 0 };
  const producers = new OutboxProducers();
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
        try {
          // Not inlined into the optional call below: `a?.b?.(f())` would skip f() when there are no metrics.
          const topic = await producers.writeNext(options.pool, options.zones);
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
