import { CaracalError } from "@caracal/streams-core";

/** The seed from PostgreSQL failed; transient (the next re-seed retries). */
export class RevocationSeedError extends CaracalError {
  readonly code = "REVOCATION_SEED_FAILED";
  readonly permanent = false;
}
