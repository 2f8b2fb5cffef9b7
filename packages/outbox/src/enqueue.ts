import { randomUUID } from "node:crypto";

import type { FieldInput, TopicInput, TopicName } from "@caracal/streams-core";
import { SIGNATURE_FIELD, SIGNATURE_V2_FIELD, Topics, encodeFields, formatIssues, topicSchemas } from "@caracal/streams-core";

import { OutboxFieldsInvalidError } from "./errors.js";
import type { OutboxTx } from "./executor.js";
import { run } from "./executor.js";
import { OUTBOX_CHANNEL, OUTBOX_ID_FIELD } from "./fields.js";

export interface EnqueueOptions {
  /** Row id, sent as `outbox_id`; default a random UUID. Reusing an id fails the insert (primary key). */
  id?: string;
  /** Request correlation id, stored in `request_id` for inspection. */
  requestId?: string;
}

/**
 * Writes one event to the outbox inside the caller's transaction `tx` (a drizzle transaction or a pg
 * client with an open transaction). The fields are checked against the topic's schema first: invalid
 * fields throw `OutboxFieldsInvalidError` and nothing is written. The row and a NOTIFY on
 * `caracal_outbox` take effect when the caller commits (nothing on rollback), which wakes the dispatchers.
 * One round trip. Returns the row id (the `outbox_id` consumers see).
 */
export async function enqueue<N extends TopicName>(tx: OutboxTx, topic: N, fields: TopicInput<N>, options: EnqueueOptions = {}): Promise<string> {
  const stream = checkedStream(topic, fields);
  const id = options.id ?? randomUUID();
  await run(
    tx,
    `WITH ins AS (
       INSERT INTO event_outbox (id, stream_name, payload_json, request_id) VALUES ($1, $2, $3::jsonb, $4) RETURNING id
     ) SELECT pg_notify('${OUTBOX_CHANNEL}', '') FROM ins`,
    [id, stream, JSON.stringify(encodeFields(fields as FieldInput)), options.requestId ?? null],
  );
  return id;
}

function checkedStream(topic: string, fields: unknown): string {
  const def = (Topics as Record<string, (typeof Topics)[TopicName] | undefined>)[topic];
  if (def === undefined) throw new OutboxFieldsInvalidError(topic, "not a registry topic");
  if (fields === null || typeof fields !== "object" || Array.isArray(fields)) throw new OutboxFieldsInvalidError(topic, "fields must be an object");
  for (const reserved of [SIGNATURE_FIELD, SIGNATURE_V2_FIELD, OUTBOX_ID_FIELD]) {
    if (Object.hasOwn(fields, reserved)) throw new OutboxFieldsInvalidError(topic, `${reserved}: set by the dispatcher, not by the producer`);
  }
  const encoded = encodeFields(fields as FieldInput);
  for (const [key, value] of Object.entries(encoded)) {
    // payload_json is jsonb, which cannot hold U+0000: refuse here rather than fail the insert.
    if (value.includes("\u0000") || key.includes("\u0000")) throw new OutboxFieldsInvalidError(topic, `${key}: contains a NUL character (U+0000), which PostgreSQL jsonb cannot store`);
  }
  const parsed = topicSchemas[def.name].safeParse(encoded);
  if (!parsed.success) throw new OutboxFieldsInvalidError(topic, formatIssues(parsed.error));
  return def.stream;
}
