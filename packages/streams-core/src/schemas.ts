/**
 * zod schemas of every topic's fields (WIRE §5) and of the audit event carried in `data` (WIRE §6).
 * Every schema accepts unknown extra fields (WIRE §2) and the upstream shapes listed in WIRE.
 */
import { z } from "zod";

import type { TopicName } from "./registry.js";

/** A required non-empty string field. */
const required = () => z.string().min(1);
/**
 * An optional id: absent, or the literal "null" that one upstream producer sends, both read as absent.
 * An empty string is also read as absent: an id is never empty.
 */
const optionalId = () =>
  z
    .string()
    .optional()
    .transform((v) => (v === undefined || v === "null" || v === "" ? undefined : v));
const optionalText = () => z.string().optional();

const REVOCATION_ANCHORS = ["session_id", "agent_session_id", "delegation_edge_id", "sid", "root_sid"] as const;

export const sessionRevokeSchema = z
  .looseObject({
    zone_id: required(),
    reason: required(),
    session_id: optionalId(),
    agent_session_id: optionalId(),
    delegation_edge_id: optionalId(),
    sid: optionalId(),
    root_sid: optionalId(),
    grant_id: optionalId(),
  })
  .refine((v) => REVOCATION_ANCHORS.some((k) => v[k] !== undefined), {
    message: `at least one revocation anchor is required: ${REVOCATION_ANCHORS.join(", ")}`,
  });

export const policyInvalidateSchema = z.looseObject({
  zone_id: required(),
  policy_set_id: required(),
  /** Absent on deactivation. */
  policy_set_version_id: optionalId(),
  /** Empty string when there is no shadow version. */
  shadow_version_id: optionalText(),
});

export const keysInvalidateSchema = z.looseObject({
  zone_id: required(),
  key_id: optionalId(),
  reason: optionalText(),
});

export const agentsLifecycleSchema = z.looseObject({
  event: z.enum(["spawn", "suspend", "resume", "terminate"]),
  zone_id: required(),
  agent_session_id: required(),
  parent_id: optionalId(),
  application_id: optionalId(),
  status: optionalText(),
  reason: optionalText(),
  occurred_at: optionalText(),
});

export const invocationsLifecycleSchema = z.looseObject({
  /** `invocation.created`, `.started`, `.cancel_requested`, ...: new event names are accepted. */
  event: z.string().regex(/^invocation\.[a-z_]+$/, "event must look like invocation.<state>"),
  zone_id: required(),
  invocation_id: required(),
  service_id: optionalId(),
  status: optionalText(),
});

const jsonArrayText = z.string().refine((s) => {
  try {
    return Array.isArray(JSON.parse(s));
  } catch {
    return false;
  }
}, "must be a JSON array");

export const delegationsInvalidateSchema = z.looseObject({
  event: z.enum(["edge_create", "edge_revoke", "edge_expire"]),
  zone_id: required(),
  epoch: z.string().regex(/^\d+$/, "epoch must be a non-negative integer"),
  delegation_edge_id: optionalId(),
  edge_ids: jsonArrayText.optional(),
  affected_edges: optionalText(),
});

export const providersRatelimitSchema = z.looseObject({});

/** The producer chain carried inside an audit event (WIRE §6). */
export const producerChainSchema = z.object({
  producer: z.string().min(1),
  seq: z.number().int().positive(),
  prev: z.string(),
});

/** The audit event in a frame's `data` (interop schema caracal-audit-event-2026-05-21). */
export const auditEventSchema = z.looseObject({
  id: required(),
  zone_id: required(),
  event_type: required(),
  request_id: required(),
  decision: z.enum(["allow", "deny"]),
  policy_set_id: z.string().optional(),
  policy_set_version_id: z.string().optional(),
  manifest_sha: z.string().optional(),
  evaluation_status: required(),
  determining_policies_json: z.array(z.looseObject({})),
  diagnostics_json: z.array(z.looseObject({})),
  metadata_json: z.looseObject({}).optional(),
  occurred_at: z.iso.datetime({ offset: true }),
  chain: producerChainSchema.optional(),
});
export type AuditEvent = z.infer<typeof auditEventSchema>;
export type ProducerChain = z.infer<typeof producerChainSchema>;

/**
 * The flat frame on `caracal.audit.events`: `{id, data, sig}`, optionally `_sig`, `outbox_id`, flat copies.
 * The frame `id` is informational (upstream producers sometimes send a request id there): the event's
 * identity is `data.id` (WIRE §6).
 */
export const auditFrameSchema = z.looseObject({
  id: z.string().optional(),
  data: required(),
  sig: z.string().optional(),
  outbox_id: optionalId(),
});
export type AuditFrame = z.infer<typeof auditFrameSchema>;

/** Dead-letter entries (WIRE §4): the fixed fields; `src.<field>` copies pass through. */
export const deadLetterSchema = z.looseObject({
  reason: required(),
  src_stream: required(),
  src_id: required(),
  group: z.string(),
  consumer: z.string(),
  deliveries: z.string().regex(/^\d+$/),
  error: z.string(),
  received_at: required(),
});

export const topicSchemas = {
  auditEvents: auditFrameSchema,
  auditEventsDlq: deadLetterSchema,
  sessionsRevoke: sessionRevokeSchema,
  policyInvalidate: policyInvalidateSchema,
  keysInvalidate: keysInvalidateSchema,
  agentsLifecycle: agentsLifecycleSchema,
  invocationsLifecycle: invocationsLifecycleSchema,
  delegationsInvalidate: delegationsInvalidateSchema,
  providersRatelimit: providersRatelimitSchema,
} as const satisfies Record<TopicName, z.ZodType>;

export type TopicMessage<N extends TopicName> = z.output<(typeof topicSchemas)[N]>;
export type TopicInput<N extends TopicName> = z.input<(typeof topicSchemas)[N]>;

/** Formats zod issues as one line: `field: problem; field: problem`. */
export function formatIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length > 0 ? i.path.join(".") : "(message)"}: ${i.message}`).join("; ");
}
