/** Helpers of the export and retention tests: rows inserted by SQL, objects read back with hyparquet. */
import { GetObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type { TestS3 } from "@caracal/testkit";
import { parquetMetadata, parquetReadObjects } from "hyparquet";
import type { FileMetaData } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import type pg from "pg";

import { exportSelectList } from "../parquet-layout.js";

export const HOUR_MS = 3_600_000;

/**
 * Inserts `count` rows spread evenly over [fromMs, fromMs + spanMs), with a microsecond part on every
 * timestamp, NULLs in every nullable column on some rows, and `chain_seq` continuing per zone.
 * `payloadBytes` adds that many random hex characters to each payload (incompressible volume).
 * `ingested_at` is each row's `occurred_at` (events ingested as they happen), or `ingestedAtMs` for all.
 */
export async function insertRows(
  pool: pg.Pool,
  opts: { count: number; fromMs: number; spanMs: number; idPrefix: string; zones?: number; zone?: string; payloadBytes?: number; exported?: boolean; ingestedAtMs?: number },
): Promise<void> {
  const zones = opts.zones ?? 3;
  const md5s = Math.ceil((opts.payloadBytes ?? 0) / 32);
  const filler = md5s > 0 ? `, 'r', ${Array.from({ length: md5s }, (_, i) => `md5(random()::text || ${i})`).join(" || ")}` : "";
  await pool.query(
    `INSERT INTO audit_events (id, zone_id, event_type, actor_id, resource_id, decision, evaluation_status, request_id,
       policy_set_id, policy_set_version_id, manifest_sha, payload_json, determining_policies_json, diagnostics_json, metadata_json,
       hmac_chain, tamper_detected, occurred_at, ingested_at, exported_at, chain_seq, content_sha256, sig, producer_id, producer_seq, producer_prev, stream_entry_id)
     SELECT $1 || g, coalesce($7::text, 'zone-' || (g % $4)),
       'token.exchange', CASE WHEN g % 2 = 0 THEN 'actor-' || g END, CASE WHEN g % 3 = 0 THEN 'res-' || g END,
       CASE WHEN g % 5 = 0 THEN 'deny' ELSE 'allow' END, 'complete', 'req-' || g,
       CASE WHEN g % 4 <> 0 THEN 'ps-1' END, CASE WHEN g % 4 <> 0 THEN 'psv-' || g END, CASE WHEN g % 6 <> 0 THEN md5(g::text) END,
       jsonb_build_object('n', g, 'text', 'é ✓ ' || g, 'nested', jsonb_build_array(1, 'x', null, true)${filler}),
       '[{"id":"baseline"}]'::jsonb, jsonb_build_array(jsonb_build_object('code', 'c' || g)),
       CASE WHEN g % 3 = 0 THEN NULL ELSE jsonb_build_object('trace', md5('t' || g)) END,
       md5('h' || g) || md5('i' || g), g % 7 = 0,
       to_timestamp($2::float8 / 1000) + ((g - 1) * ($3::float8 / $5)) * interval '1 millisecond' + interval '123 microseconds',
       coalesce(to_timestamp($8::float8 / 1000), to_timestamp($2::float8 / 1000) + ((g - 1) * ($3::float8 / $5)) * interval '1 millisecond' + interval '123 microseconds'),
       CASE WHEN $6 THEN now() END,
       coalesce((SELECT max(chain_seq) FROM audit_events e WHERE e.zone_id = coalesce($7::text, 'zone-' || (g % $4))), 0) + g,
       md5('c' || g) || md5('d' || g), CASE WHEN g % 2 = 1 THEN md5('s' || g) END,
       CASE WHEN g % 2 = 1 THEN 'producer-a' END, CASE WHEN g % 2 = 1 THEN g END, CASE WHEN g % 2 = 1 THEN md5('p' || g) END,
       '1-' || g
     FROM generate_series(1, $5::int) AS g`,
    [opts.idPrefix, opts.fromMs, opts.spanMs, zones, opts.count, opts.exported ?? false, opts.zone ?? null, opts.ingestedAtMs ?? null],
  );
}

export function s3Client(s3: TestS3): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
}

export function s3ConfigOf(s3: TestS3) {
  return {
    endpoint: s3.endpoint,
    bucket: s3.bucket,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  };
}

export async function listKeys(client: S3Client, bucket: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

export async function getBytes(client: S3Client, bucket: string, key: string): Promise<ArrayBuffer> {
  const obj = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = await obj.Body!.transformToByteArray();
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/**
 * Reads a file with hyparquet (an independent reader) keeping timestamps as exact microseconds
 * (bigint) and JSON parsed; returns rows and the footer.
 */
export async function readParquet(file: ArrayBuffer): Promise<{ rows: Array<Record<string, unknown>>; metadata: FileMetaData }> {
  const metadata = parquetMetadata(file);
  const rows = (await parquetReadObjects({
    file,
    compressors,
    parsers: { timestampFromMicroseconds: (micros: bigint) => micros },
  })) as Array<Record<string, unknown>>;
  return { rows, metadata };
}

/**
 * The rows of [fromMs, toMs) in the same form as `readParquet`'s: micro timestamps and int64 as bigint,
 * with `exported_at` as stored.
 */
export async function dbRows(pool: pg.Pool, fromMs: number, toMs: number): Promise<Array<Record<string, unknown>>> {
  const list = exportSelectList("exported_at").replace(/extract\(epoch from exported_at::timestamptz\)/, "extract(epoch from exported_at)");
  const { rows } = await pool.query<Record<string, unknown>>(
    `SELECT ${list} FROM audit_events WHERE occurred_at >= to_timestamp($1::float8 / 1000) AND occurred_at < to_timestamp($2::float8 / 1000) ORDER BY occurred_at, id`,
    [fromMs, toMs],
  );
  const big = new Set(["occurred_at", "exported_at", "created_at", "ingested_at", "chain_seq", "producer_seq"]);
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, big.has(k) && v !== null ? BigInt(v as string) : v])));
}
