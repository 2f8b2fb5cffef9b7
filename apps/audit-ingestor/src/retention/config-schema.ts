/** The retention rotator's environment variables: a zod fragment merged into the app's `src/config.ts`. */
import { intVar } from "@caracal/service-kit";
import { z } from "zod";

export const retentionConfigSchema = z.object({
  /** Rows whose occurred_at is older than this many days are deleted. Default 365. */
  AUDIT_RETENTION_DAYS: intVar(365, { min: 1 }),
  /** How often the retention leader runs. Default 3,600,000 ms (1 h). */
  AUDIT_RETENTION_INTERVAL_MS: intVar(3_600_000, { min: 1000 }),
  /** Also sizes retention batches: AUDIT_MAX_DELIVERIES × 100 rows per DELETE (seed 002). Default 5. */
  AUDIT_MAX_DELIVERIES: intVar(5, { min: 1 }),
});

export type RetentionEnv = z.output<typeof retentionConfigSchema>;

/** Seed 002: "deletes happen in batches of AUDIT_MAX_DELIVERIES × 100 rows". */
export function retentionBatchSize(maxDeliveries: number): number {
  return maxDeliveries * 100;
}
