/**
 * Errors carry a stable `code` and say in their type whether retrying can help (`permanent`).
 * The consumer engine decides ack / retry / dead-letter from `permanent` alone, never from message text.
 */

/** Reasons written to the `reason` field of a dead letter (WIRE §4). Apps may add their own. */
export type DeadLetterReason =
  | "signature_missing"
  | "signature_invalid"
  | "parse_error"
  | "schema_invalid"
  | "max_deliveries_exceeded"
  | "permanent_error"
  | (string & {});

export abstract class CaracalError extends Error {
  abstract readonly code: string;
  /** True when the same input can never succeed: the message is dead-lettered at once. */
  abstract readonly permanent: boolean;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A configuration problem found at start-up. Lists every bad setting at once. */
export class ConfigError extends CaracalError {
  readonly code = "CONFIG_INVALID";
  readonly permanent = true;
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
  }
}

/**
 * The message itself is unacceptable (bad signature, unparseable, schema-invalid, tampered):
 * dead-letter it with `reason` and acknowledge it.
 */
export class RejectedMessageError extends CaracalError {
  readonly permanent = true;
  readonly code: string;
  constructor(
    readonly reason: DeadLetterReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = reason.toUpperCase();
  }
}

/** Retrying may help (a database or network failure): leave the entry pending. */
export class TransientError extends CaracalError {
  readonly code = "TRANSIENT";
  readonly permanent = false;
}

/** Classifies anything thrown by a handler: unknown errors are transient (retry, then max deliveries). */
export function isPermanent(error: unknown): error is CaracalError {
  return error instanceof CaracalError && error.permanent;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
