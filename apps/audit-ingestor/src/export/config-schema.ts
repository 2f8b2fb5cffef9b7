/**
 * The export's environment variables, as a zod fragment merged into the app's `src/config.ts` (the only
 * reader of the environment). Export is on when AUDIT_EXPORT_S3_ENDPOINT and AUDIT_EXPORT_S3_BUCKET are
 * both set; credentials come from the AWS SDK's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
 * a profile, an instance role), never from this schema.
 */
import { boolVar, intVar, urlVar } from "@caracal/service-kit";
import { z } from "zod";

export const exportConfigSchema = z.object({
  /** S3-compatible endpoint (AWS S3, MinIO, GCS in S3 mode). Unset: export off. */
  AUDIT_EXPORT_S3_ENDPOINT: urlVar(["http:", "https:"]).optional(),
  /** Bucket of the Parquet files. Unset: export off. */
  AUDIT_EXPORT_S3_BUCKET: z.string().min(1).optional(),
  /** Default us-east-1. */
  AUDIT_EXPORT_S3_REGION: z.string().min(1).default("us-east-1"),
  /** Path-style URLs (`endpoint/bucket/key`), needed by MinIO and s3rver. Default true. */
  AUDIT_EXPORT_S3_FORCE_PATH_STYLE: boolVar(true),
  /** Pause between two export passes of the leader. Default 60,000 ms. */
  AUDIT_EXPORT_INTERVAL_MS: intVar(60_000, { min: 100 }),
  /** An hour is exported once it ended this long ago (events still in flight). Default 300,000 ms. */
  AUDIT_EXPORT_SETTLE_MS: intVar(300_000, { min: 0 }),
  /** Rows per PostgreSQL fetch and per Parquet row group. Default 10,000. */
  AUDIT_EXPORT_PAGE_ROWS: intVar(10_000, { min: 100, max: 1_000_000 }),
  /** TTL of the leader leases (export and retention), renewed every third. Default 15,000 ms. */
  AUDIT_LEADER_LEASE_TTL_MS: intVar(15_000, { min: 1_000 }),
});

export type ExportEnv = z.output<typeof exportConfigSchema>;

export interface ExportS3Config {
  endpoint: string;
  bucket: string;
  region: string;
  /** Path-style URLs (MinIO, s3rver). Default true. */
  forcePathStyle?: boolean;
  /** Explicit credentials (tests); undefined = the SDK's default chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

/** The S3 settings when export is on, else undefined. The caller checks that both or neither are set. */
export function exportS3ConfigFrom(env: ExportEnv): ExportS3Config | undefined {
  if (env.AUDIT_EXPORT_S3_ENDPOINT === undefined || env.AUDIT_EXPORT_S3_BUCKET === undefined) return undefined;
  return {
    endpoint: env.AUDIT_EXPORT_S3_ENDPOINT,
    bucket: env.AUDIT_EXPORT_S3_BUCKET,
    region: env.AUDIT_EXPORT_S3_REGION,
    forcePathStyle: env.AUDIT_EXPORT_S3_FORCE_PATH_STYLE,
  };
}
