/**
 * The layout of an exported Parquet file: every `audit_events` column, in table order, with explicit
 * types. Timestamps are INT64 microseconds with the TIMESTAMP logical type `isAdjustedToUTC = true`
 * (PostgreSQL's timestamptz precision, an instant rather than a wall-clock time); JSONB columns are
 * BYTE_ARRAY with the JSON logical type; chain fields are exported as stored so the ledger can be
 * re-verified from the files alone.
 */
import type { SchemaElement } from "hyparquet";
import type { ColumnSource } from "hyparquet-writer";

type Kind = "string" | "json" | "bool" | "int64" | "timestamp";

interface ColumnDef {
  name: string;
  kind: Kind;
  required: boolean;
}

export const EXPORT_COLUMNS: readonly ColumnDef[] = [
  { name: "id", kind: "string", required: true },
  { name: "zone_id", kind: "string", required: true },
  { name: "event_type", kind: "string", required: false },
  { name: "actor_id", kind: "string", required: false },
  { name: "resource_id", kind: "string", required: false },
  { name: "decision", kind: "string", required: false },
  { name: "evaluation_status", kind: "string", required: false },
  { name: "request_id", kind: "string", required: false },
  { name: "policy_set_id", kind: "string", required: false },
  { name: "policy_set_version_id", kind: "string", required: false },
  { name: "manifest_sha", kind: "string", required: false },
  { name: "payload_json", kind: "json", required: false },
  { name: "determining_policies_json", kind: "json", required: false },
  { name: "diagnostics_json", kind: "json", required: false },
  { name: "metadata_json", kind: "json", required: false },
  { name: "hmac_chain", kind: "string", required: false },
  { name: "tamper_detected", kind: "bool", required: true },
  { name: "occurred_at", kind: "timestamp", required: true },
  { name: "exported_at", kind: "timestamp", required: false },
  { name: "created_at", kind: "timestamp", required: true },
  { name: "chain_seq", kind: "int64", required: false },
  { name: "content_sha256", kind: "string", required: false },
  { name: "ingested_at", kind: "timestamp", required: true },
  { name: "sig", kind: "string", required: false },
  { name: "producer_id", kind: "string", required: false },
  { name: "producer_seq", kind: "int64", required: false },
  { name: "producer_prev", kind: "string", required: false },
  { name: "stream_entry_id", kind: "string", required: false },
];

/**
 * The SELECT list reading rows in export form: timestamps as exact integer microseconds since the epoch
 * (text, to keep every digit through node-pg), and `exported_at` replaced by the export's own time, which
 * the same transaction writes to the rows.
 */
export function exportSelectList(exportedAtParam: string): string {
  return EXPORT_COLUMNS.map((c) => {
    if (c.name === "exported_at") return `(extract(epoch from ${exportedAtParam}::timestamptz) * 1000000)::int8::text AS exported_at`;
    if (c.kind === "timestamp") return `(extract(epoch from ${c.name}) * 1000000)::int8::text AS ${c.name}`;
    if (c.kind === "int64") return `${c.name}::text AS ${c.name}`;
    return c.name;
  }).join(", ");
}

export function parquetSchema(): SchemaElement[] {
  const root: SchemaElement = { name: "root", num_children: EXPORT_COLUMNS.length };
  return [
    root,
    ...EXPORT_COLUMNS.map((c): SchemaElement => {
      const repetition_type = c.required ? "REQUIRED" : "OPTIONAL";
      switch (c.kind) {
        case "string":
          return { name: c.name, type: "BYTE_ARRAY", converted_type: "UTF8", logical_type: { type: "STRING" }, repetition_type };
        case "json":
          return { name: c.name, type: "BYTE_ARRAY", converted_type: "JSON", logical_type: { type: "JSON" }, repetition_type };
        case "bool":
          return { name: c.name, type: "BOOLEAN", repetition_type };
        case "int64":
          return { name: c.name, type: "INT64", logical_type: { type: "INTEGER", bitWidth: 64, isSigned: true }, repetition_type };
        case "timestamp":
          return {
            name: c.name,
            type: "INT64",
            converted_type: "TIMESTAMP_MICROS",
            logical_type: { type: "TIMESTAMP", isAdjustedToUTC: true, unit: "MICROS" },
            repetition_type,
          };
      }
    }),
  ];
}

/** Turns one page of rows (as returned by `exportSelectList`) into column data of one row group. */
export function columnsOf(rows: ReadonlyArray<Record<string, unknown>>): ColumnSource[] {
  return EXPORT_COLUMNS.map((c) => {
    const values = rows.map((r) => r[c.name]);
    if (c.kind === "timestamp" || c.kind === "int64") {
      return { name: c.name, data: values.map((v) => (v === null || v === undefined ? null : BigInt(v as string))) };
    }
    return { name: c.name, data: values };
  });
}
