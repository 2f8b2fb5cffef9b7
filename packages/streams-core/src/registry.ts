/**
 * The one registry of stream keys, consumer groups, MAXLEN and dead-letter streams (WIRE §1).
 * No stream or group name is written as a literal anywhere else: renaming a group re-consumes the stream.
 */

export interface TopicDefinition {
  /** Registry key, used in code and metrics labels. */
  readonly name: TopicName;
  /** Logical stream key (without any test key prefix); also the stream name in `_sig` canonical bytes. */
  readonly stream: string;
  /** Consumer groups by role. */
  readonly groups: Readonly<Record<string, string>>;
  /** Approximate MAXLEN for every XADD to this stream. */
  readonly maxLen: number;
  /** Where rejected and exhausted entries go; undefined for dead-letter streams themselves. */
  readonly deadLetterStream: string | undefined;
}

function topic<const N extends string, const G extends Record<string, string>>(def: {
  name: N;
  stream: string;
  groups: G;
  maxLen: number;
  deadLetterStream?: string;
}) {
  return { ...def, deadLetterStream: def.deadLetterStream } as const;
}

export const Topics = {
  auditEvents: topic({
    name: "auditEvents",
    stream: "caracal.audit.events",
    groups: { auditIngestor: "audit-ingestor", siemExport: "siem-export" },
    maxLen: 1_000_000,
    deadLetterStream: "caracal.audit.events.dlq",
  }),
  auditEventsDlq: topic({
    name: "auditEventsDlq",
    stream: "caracal.audit.events.dlq",
    groups: { observer: "audit-dlq-observer" },
    maxLen: 100_000,
  }),
  sessionsRevoke: topic({
    name: "sessionsRevoke",
    stream: "caracal.sessions.revoke",
    groups: { sts: "sts-revocation", gateway: "gateway-revocation", resource: "resource-revocation" },
    maxLen: 100_000,
    deadLetterStream: "caracal.sessions.revoke.dead",
  }),
  policyInvalidate: topic({
    name: "policyInvalidate",
    stream: "caracal.policy.invalidate",
    groups: { opaEngine: "opa-engine" },
    maxLen: 100_000,
    deadLetterStream: "caracal.policy.invalidate.dead",
  }),
  keysInvalidate: topic({
    name: "keysInvalidate",
    stream: "caracal.keys.invalidate",
    groups: { stsKeys: "sts-keys" },
    maxLen: 100_000,
    deadLetterStream: "caracal.keys.invalidate.dead",
  }),
  agentsLifecycle: topic({
    name: "agentsLifecycle",
    stream: "caracal.agents.lifecycle",
    groups: { coordinatorRelay: "coordinator-relay" },
    maxLen: 100_000,
    deadLetterStream: "caracal.agents.lifecycle.dead",
  }),
  invocationsLifecycle: topic({
    name: "invocationsLifecycle",
    stream: "caracal.invocations.lifecycle",
    groups: { observer: "invocations-observer" },
    maxLen: 100_000,
    deadLetterStream: "caracal.invocations.lifecycle.dead",
  }),
  delegationsInvalidate: topic({
    name: "delegationsInvalidate",
    stream: "caracal.delegations.invalidate",
    groups: { observer: "delegations-observer", resource: "resource-delegation-invalidation" },
    maxLen: 100_000,
    deadLetterStream: "caracal.delegations.invalidate.dead",
  }),
  providersRatelimit: topic({
    name: "providersRatelimit",
    stream: "caracal.providers.ratelimit",
    groups: { coordination: "provider-ratelimit" },
    maxLen: 100_000,
    deadLetterStream: "caracal.providers.ratelimit.dead",
  }),
} as const satisfies Record<string, Omit<TopicDefinition, "name"> & { name: string }>;

export type TopicName = keyof typeof Topics;
export type Topic = (typeof Topics)[TopicName];

/** MAXLEN of every `.dead` stream (seed: dead-letter streams keep up to 100,000 entries). */
export const DEAD_LETTER_MAXLEN = 100_000;

const byStream = new Map<string, Topic>(Object.values(Topics).map((t) => [t.stream, t]));

/** Looks a topic up by its stream key; undefined for an unknown stream. */
export function topicByStream(stream: string): Topic | undefined {
  return byStream.get(stream);
}

/** MAXLEN for any stream key the project writes to, dead-letter streams included. */
export function maxLenOf(stream: string): number {
  return byStream.get(stream)?.maxLen ?? DEAD_LETTER_MAXLEN;
}

/**
 * Physical Redis key of a logical stream. `keyPrefix` isolates tests and tenants sharing one Redis;
 * it is never part of the signed canonical bytes, so a prefix does not change `_sig`.
 */
export function streamKey(stream: string, keyPrefix = ""): string {
  return keyPrefix + stream;
}
