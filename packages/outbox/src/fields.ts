import type { Fields, FieldInput, Topic } from "@caracal/streams-core";
import { SIGNATURE_FIELD, encodeFields, formatIssues, topicByStream, topicSchemas } from "@caracal/streams-core";

/** LISTEN/NOTIFY channel: `enqueue` and `requeue` notify it; PostgreSQL delivers at commit. */
export const OUTBOX_CHANNEL = "caracal_outbox";

/** Field added to every dispatched entry: the row id, so consumers can drop a duplicate (WIRE §2). */
export const OUTBOX_ID_FIELD = "outbox_id";

/** Why a row can never be published as it is; it fails at once, without retries. */
export type OutboxRejectReason = "unknown_stream" | "payload_invalid" | "schema_invalid";

export type OutboxEntryCheck =
  | { ok: true; topic: Topic; fields: Fields }
  | { ok: false; reason: OutboxRejectReason; message: string };

/**
 * The stream entry of an outbox row (WIRE §2): the `payload_json` object flattened (strings stay as they
 * are, numbers and booleans become text, objects and arrays become JSON text, null is omitted) plus
 * `outbox_id`, validated against the schema of the registry topic whose stream is `stream_name`.
 */
export function outboxEntry(streamName: string, payload: unknown, outboxId: string): OutboxEntryCheck {
  const topic = topicByStream(streamName);
  if (topic === undefined) return { ok: false, reason: "unknown_stream", message: `stream_name ${JSON.stringify(streamName)} is not a registry stream` };
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    return { ok: false, reason: "payload_invalid", message: "payload_json is not a JSON object" };
  }
  const fields: Fields = encodeFields(payload as FieldInput, SIGNATURE_FIELD);
  fields[OUTBOX_ID_FIELD] = outboxId;
  const parsed = topicSchemas[topic.name].safeParse(fields);
  if (!parsed.success) return { ok: false, reason: "schema_invalid", message: `${topic.stream}: ${formatIssues(parsed.error)}` };
  return { ok: true, topic, fields };
}
