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

/** Why `activatePolicySetVersion` refused an activation; nothing was changed. */
export type PolicyActivationProblem =
  | "version_not_found"
  | "manifest_invalid"
  | "manifest_sha256_mismatch"
  | "referenced_policy_version_missing"
  | "policy_set_binding_not_found";

/** `activatePolicySetVersion` refused: the version, its manifest or the zone's binding is not what it must be. */
export class PolicyActivationError extends CaracalError {
  readonly code = "POLICY_ACTIVATION_REFUSED";
  readonly permanent = true;
  constructor(
    readonly problem: PolicyActivationProblem,
    detail: string,
  ) {
    super(`policy activation refused (${problem}): ${detail}`);
  }
}
