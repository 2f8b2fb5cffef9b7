/**
 * The shapes an audit event takes on its way to a SIEM:
 * - raw: the event as the producer sent it (the `data` JSON of the frame), plus the stream entry id;
 * - OCSF: an OCSF 1.1 API Activity (class 6003) record, Caracal's fields kept under `unmapped`;
 * - CEF in an RFC 5424 syslog message, framed by octet counting (RFC 6587 §3.4.1).
 */
import { hostname } from "node:os";

export interface ExportEvent {
  /** Stream entry id of the frame. */
  entryId: string;
  /** The parsed audit event (`data`). */
  event: Record<string, unknown>;
  /** `data` exactly as sent. */
  data: string;
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

function timeMs(event: Record<string, unknown>): number {
  const t = Date.parse(String(event.occurred_at ?? ""));
  return Number.isFinite(t) ? t : Date.now();
}

/** OCSF API Activity: who did what, allowed or denied, under which policy. */
export function toOcsf(e: ExportEvent): Record<string, unknown> {
  const ev = e.event;
  const decision = str(ev.decision);
  const denied = decision === "deny" || decision === "rejected";
  const metadata = (typeof ev.metadata_json === "object" && ev.metadata_json !== null ? ev.metadata_json : {}) as Record<string, unknown>;
  return {
    class_uid: 6003,
    class_name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
    activity_id: 99,
    activity_name: str(ev.event_type) ?? "unknown",
    type_uid: 600399,
    time: timeMs(ev),
    severity_id: denied ? 3 : 1,
    severity: denied ? "Medium" : "Informational",
    status_id: decision === undefined ? 0 : denied ? 2 : 1,
    status: decision === undefined ? "Unknown" : denied ? "Failure" : "Success",
    status_detail: decision,
    metadata: {
      version: "1.1.0",
      uid: str(ev.id),
      correlation_uid: str(ev.request_id),
      product: { name: "Caracal", vendor_name: "Garudex Labs", feature: { name: "caracal-streams siem-export" } },
      tenant_uid: str(ev.zone_id),
      original_time: str(ev.occurred_at),
    },
    api: { operation: str(ev.event_type) ?? "unknown", request: { uid: str(ev.request_id) } },
    actor: { user: { uid: str(metadata.principal) ?? str(metadata.client) ?? str(metadata.agent_session_id) } },
    ...(str(metadata.resource) ? { resources: [{ uid: str(metadata.resource) }] } : {}),
    unmapped: {
      zone_id: ev.zone_id,
      decision: ev.decision,
      evaluation_status: ev.evaluation_status,
      policy_set_id: ev.policy_set_id,
      policy_set_version_id: ev.policy_set_version_id,
      manifest_sha: ev.manifest_sha,
      determining_policies: ev.determining_policies_json,
      diagnostics: ev.diagnostics_json,
      metadata: ev.metadata_json,
      stream_entry_id: e.entryId,
    },
  };
}

/** The JSON object a sink writes for an event in `format`. */
export function formatted(e: ExportEvent, format: "raw" | "ocsf"): Record<string, unknown> {
  return format === "ocsf" ? toOcsf(e) : { ...e.event, stream_entry_id: e.entryId };
}

/** CEF header field: `\` and `|` escaped. */
function cefHeader(v: string): string {
  return v.replace(/[\\|]/g, (c) => `\\${c}`).replace(/[\r\n]/g, " ");
}

/** CEF extension value: `\`, `=` escaped, newlines as \n. */
function cefValue(v: string): string {
  return v.replace(/[\\=]/g, (c) => `\\${c}`).replace(/\r?\n|\r/g, "\\n");
}

export function toCef(e: ExportEvent): string {
  const ev = e.event;
  const decision = str(ev.decision) ?? "";
  const severity = decision === "deny" || decision === "rejected" ? 6 : 3;
  const type = str(ev.event_type) ?? "audit";
  const ext: Array<[string, string | undefined]> = [
    ["rt", String(timeMs(ev))],
    ["act", decision],
    ["outcome", decision === "" ? undefined : decision === "deny" ? "failure" : "success"],
    ["externalId", str(ev.id)],
    ["requestClientApplication", str(ev.event_type)],
    ["cs1Label", "zone"],
    ["cs1", str(ev.zone_id)],
    ["cs2Label", "requestId"],
    ["cs2", str(ev.request_id)],
    ["cs3Label", "policySetVersion"],
    ["cs3", str(ev.policy_set_version_id)],
    ["cs4Label", "streamEntryId"],
    ["cs4", e.entryId],
  ];
  const extension = ext.filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${cefValue(v as string)}`).join(" ");
  return `CEF:0|Caracal|caracal-streams|1|${cefHeader(type)}|${cefHeader(`${type} ${decision}`.trim())}|${severity}|${extension}`;
}

const HOST = hostname().replace(/[^\x21-\x7e]/g, "") || "-";

/** One RFC 5424 message (facility authpriv), octet-counted for TCP (RFC 6587). */
export function syslogFrame(e: ExportEvent): string {
  const decision = str(e.event.decision);
  const pri = 10 * 8 + (decision === "deny" ? 4 : 6);
  const timestamp = new Date(timeMs(e.event)).toISOString();
  const msgid = (str(e.event.event_type) ?? "audit").replace(/[^\x21-\x7e]/g, "_").slice(0, 32);
  const message = `<${pri}>1 ${timestamp} ${HOST} caracal-streams ${process.pid} ${msgid} - ${toCef(e)}`;
  return `${Buffer.byteLength(message, "utf8")} ${message}`;
}

/** One Splunk HEC event envelope. */
export function hecEvent(e: ExportEvent, options: { format: "raw" | "ocsf"; sourcetype: string; index?: string }): string {
  return JSON.stringify({
    time: timeMs(e.event) / 1000,
    host: HOST,
    source: "caracal-streams",
    sourcetype: options.sourcetype,
    ...(options.index !== undefined ? { index: options.index } : {}),
    event: formatted(e, options.format),
  });
}
