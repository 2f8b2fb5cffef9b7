import { sql } from "drizzle-orm";
import { bigint, bigserial, index, jsonb, pgTable, primaryKey, text, timestamptz } from "./columns.js";

/**
 * Derived state of apps/observers, shared by every observer replica (consumer groups, not fan-out).
 * Owned by apps/observers only; no upstream table has these names.
 */

/** The last state of each agent session: ordered by `occurred_at`; `terminate` is final. */
export const observedAgentSessions = pgTable(
  "observed_agent_sessions",
  {
    zoneId: text("zone_id").notNull(),
    agentSessionId: text("agent_session_id").notNull(),
    status: text("status").notNull(),
    occurredAt: timestamptz("occurred_at").notNull(),
    streamId: text("stream_id").notNull(),
    updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
  },
  (t) => [primaryKey({ columns: [t.zoneId, t.agentSessionId] })],
);

/** Every lifecycle event of a session, kept for the session's history. */
export const observedAgentSessionEvents = pgTable(
  "observed_agent_session_events",
  {
    zoneId: text("zone_id").notNull(),
    agentSessionId: text("agent_session_id").notNull(),
    event: text("event").notNull(),
    occurredAt: timestamptz("occurred_at").notNull(),
    streamId: text("stream_id").notNull(),
    fields: jsonb("fields").notNull(),
  },
  (t) => [primaryKey({ columns: [t.zoneId, t.agentSessionId, t.streamId] })],
);

/** Invocations per zone and service: state, first and last event times, duration once finished. */
export const observedInvocations = pgTable(
  "observed_invocations",
  {
    zoneId: text("zone_id").notNull(),
    invocationId: text("invocation_id").notNull(),
    serviceId: text("service_id"),
    state: text("state").notNull(),
    lastEvent: text("last_event").notNull(),
    startedAt: timestamptz("started_at").notNull(),
    lastAt: timestamptz("last_at").notNull(),
    finishedAt: timestamptz("finished_at"),
    durationMs: bigint("duration_ms", { mode: "number" }),
  },
  (t) => [primaryKey({ columns: [t.zoneId, t.invocationId] }), index("observed_invocations_state_idx").on(t.zoneId, t.state)],
);

/** The delegation epoch per zone: only ever moves forward. */
export const observedDelegationEpochs = pgTable("observed_delegation_epochs", {
  zoneId: text("zone_id").primaryKey(),
  epoch: bigint("epoch", { mode: "number" }).notNull(),
  lastEvent: text("last_event").notNull(),
  streamId: text("stream_id").notNull(),
  updatedAt: timestamptz("updated_at").notNull().default(sql`now()`),
});

/** Recent events of every observed stream, newest first; trimmed by count per stream. */
export const observedEvents = pgTable(
  "observed_events",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    stream: text("stream").notNull(),
    zoneId: text("zone_id"),
    streamId: text("stream_id").notNull(),
    event: text("event"),
    fields: jsonb("fields").notNull(),
    receivedAt: timestamptz("received_at").notNull().default(sql`now()`),
  },
  (t) => [index("observed_events_stream_idx").on(t.stream, t.seq), index("observed_events_zone_idx").on(t.stream, t.zoneId, t.seq)],
);

/** Keys already applied (`outbox_id`, `dedupe_key` or entry id), per stream: duplicates are dropped. */
export const observedDedupe = pgTable(
  "observed_dedupe",
  {
    stream: text("stream").notNull(),
    key: text("key").notNull(),
    seenAt: timestamptz("seen_at").notNull().default(sql`now()`),
  },
  (t) => [primaryKey({ columns: [t.stream, t.key] }), index("observed_dedupe_seen_idx").on(t.seenAt)],
);
