import { CaracalError } from "@caracal/streams-core";

/**
 * `enqueue` was given fields that do not fit the topic's schema (or a topic that is not in the registry).
 * Thrown before anything is written, so the caller's transaction can roll back with a clear reason.
 */
export class OutboxFieldsInvalidError extends CaracalError {
  readonly code = "OUTBOX_FIELDS_INVALID";
  readonly permanent = true;
  constructor(
    readonly topic: string,
    readonly problems: string,
  ) {
    super(`outbox: fields for topic ${topic} are invalid: ${problems}`);
  }
}
