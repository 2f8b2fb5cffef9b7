// Live status for scripts/demo.sh: one compact line per service (ready, events/s, lag, pending, dead
// letters) read from its /readyz and /metrics, then one end-to-end line from Redis and PostgreSQL; with
// --final, a summary table of what moved end to end. Lives in this app so that `pg` and `ioredis` resolve
// from its dependencies. Never fails: what it cannot reach prints as "n/a".
//
//   node demo-status.mjs --services outbox-dispatcher:9091,audit-ingestor:9090 [--state file] [--final]
//
// --state keeps the previous counter totals between runs, so events/s is the rate since the last run.
// Reads DATABASE_URL, REDIS_URL, CARACAL_KEY_PREFIX and METRICS_BEARER.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";

import { Redis } from "ioredis";
import pg from "pg";

const { values: args } = parseArgs({ options: { services: { type: "string", default: "" }, state: { type: "string" }, final: { type: "boolean", default: false } } });
const services = args.services
  .split(",")
  .filter((s) => s.includes(":"))
  .map((s) => {
    const [name, port] = s.split(":");
    return { name, port: Number(port) };
  });
const prefix = process.env.CARACAL_KEY_PREFIX ?? "";

/** Counters whose sum is a service's "events": what it received, dispatched or produced. */
const EVENT_COUNTERS = ["caracal_stream_received_total", "caracal_outbox_dispatched_total", "caracal_traffic_audit_events_total", "caracal_traffic_outbox_rows_total"];
const LAG = ["caracal_stream_lag_entries"];
const PENDING = ["caracal_stream_pending_entries", "caracal_outbox_pending_rows"];
const DEAD = ["caracal_dead_letter_entries"];

/** Sums of every sample per metric name (labels ignored) from the Prometheus text format. */
function sums(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const v = Number(m[2]);
    if (Number.isFinite(v)) out.set(m[1], (out.get(m[1]) ?? 0) + v);
  }
  return out;
}
const total = (m, names) => (m === undefined ? undefined : names.reduce((a, n) => a + (m.get(n) ?? 0), 0));

async function fetchText(url, headers = {}) {
  const r = await fetch(url, { headers, signal: AbortSignal.timeout(2000) });
  return { ok: r.ok, status: r.status, text: await r.text() };
}

async function serviceStatus({ name, port }) {
  const base = `http://127.0.0.1:${port}`;
  let ready = "down";
  let reason = "";
  try {
    const r = await fetchText(`${base}/readyz`);
    ready = r.ok ? "yes" : "no";
    if (!r.ok) {
      try {
        const body = JSON.parse(r.text);
        reason = Object.entries(body.checks ?? {})
          .filter(([, ok]) => ok === false)
          .map(([k]) => `${k}${body.details?.[k] ? `: ${body.details[k]}` : ""}`)
          .join("; ");
      } catch {
        reason = r.text.slice(0, 60);
      }
    }
  } catch {
    /* down */
  }
  let metrics;
  try {
    const bearer = process.env.METRICS_BEARER;
    const r = await fetchText(`${base}/metrics`, bearer ? { authorization: `Bearer ${bearer}` } : {});
    if (r.ok) metrics = sums(r.text);
  } catch {
    /* n/a */
  }
  return { name, ready, reason, events: total(metrics, EVENT_COUNTERS), lag: total(metrics, LAG), pending: total(metrics, PENDING), dead: total(metrics, DEAD) };
}

async function redisNumbers() {
  const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: 1, connectTimeout: 2000, lazyConnect: true });
  redis.on("error", () => undefined);
  const streams = ["caracal.audit.events", "caracal.sessions.revoke", "caracal.policy.invalidate", "caracal.keys.invalidate", "caracal.agents.lifecycle", "caracal.invocations.lifecycle", "caracal.delegations.invalidate"];
  try {
    await redis.connect();
    const out = {};
    for (const s of streams) {
      out[s] = await redis.xlen(prefix + s);
      out[`${s}.dead`] = await redis.xlen(`${prefix}${s}.dead`);
    }
    out["caracal.audit.events.dlq"] = await redis.xlen(`${prefix}caracal.audit.events.dlq`);
    return out;
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

/** Counts from the tables each service owns; a table that does not exist (an app not built) is left out. */
async function pgNumbers() {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 2000 });
  const queries = {
    audit_rows: ["audit_events", "SELECT count(*) FROM audit_events"],
    audit_zones: ["audit_events", "SELECT count(DISTINCT zone_id) FROM audit_events"],
    tamper_alerts: ["audit_tamper_alerts", "SELECT count(*) FROM audit_tamper_alerts"],
    outbox_pending: ["event_outbox", "SELECT count(*) FROM event_outbox WHERE dispatched_at IS NULL"],
    outbox_dispatched: ["event_outbox", "SELECT count(*) FROM event_outbox WHERE dispatched_at IS NOT NULL"],
    coordinator_published: ["caracal_outbox", "SELECT count(*) FROM caracal_outbox WHERE status = 'published'"],
    coordinator_pending: ["caracal_outbox", "SELECT count(*) FROM caracal_outbox WHERE status = 'pending'"],
    revocations: ["session_revocations", "SELECT count(*) FROM session_revocations"],
    agent_sessions: ["observed_agent_sessions", "SELECT count(*) FROM observed_agent_sessions"],
  };
  try {
    await client.connect();
    const out = {};
    for (const [key, [table, sql]] of Object.entries(queries)) {
      const exists = await client.query("SELECT to_regclass($1) IS NOT NULL AS ok", [table]);
      if (exists.rows[0].ok) out[key] = Number((await client.query(sql)).rows[0].count);
    }
    return out;
  } catch {
    return undefined;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const fmt = (v, digits = 0) => (v === undefined ? "n/a" : typeof v === "number" ? v.toFixed(digits) : String(v));
const previous = args.state && existsSync(args.state) ? JSON.parse(readFileSync(args.state, "utf8")) : { at: 0, events: {} };
const now = Date.now();
const [statuses, r, p] = await Promise.all([Promise.all(services.map(serviceStatus)), redisNumbers(), pgNumbers()]);
const seconds = previous.at > 0 ? (now - previous.at) / 1000 : 0;
const time = new Date(now).toISOString().slice(11, 19);

const rows = statuses.map((s) => {
  const before = previous.events[s.name];
  const rate = s.events !== undefined && before !== undefined && seconds > 0 ? Math.max(0, s.events - before) / seconds : undefined;
  return [s.name, s.ready, fmt(rate, 1), fmt(s.events), fmt(s.lag), fmt(s.pending), fmt(s.dead), s.reason];
});
const header = ["service", "ready", "events/s", "events", "lag", "pending", "dead letters", ""];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => String(row[i]).length)));
const line = (cells) => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join("  ").trimEnd();
console.log(`[${time}]`);
console.log(`  ${line(header)}`);
for (const row of rows) console.log(`  ${line(row)}`);
if (r !== undefined && p !== undefined) {
  const dead = Object.entries(r)
    .filter(([k, v]) => (k.endsWith(".dead") || k.endsWith(".dlq")) && v > 0)
    .map(([k, v]) => `${k.replace("caracal.", "")}=${v}`)
    .join(" ");
  console.log(
    `  end to end: audit stream=${r["caracal.audit.events"]} -> ledger rows=${fmt(p.audit_rows)} (zones ${fmt(p.audit_zones)}, tamper alerts ${fmt(p.tamper_alerts)}) | ` +
      `outbox dispatched=${fmt(p.outbox_dispatched)} pending=${fmt(p.outbox_pending)}` +
      (p.coordinator_published !== undefined ? ` (caracal_outbox published=${p.coordinator_published})` : "") +
      (p.revocations !== undefined ? ` | revocations stored=${p.revocations}` : "") +
      (p.agent_sessions !== undefined ? ` | agent sessions observed=${p.agent_sessions}` : "") +
      ` | dead letters: ${dead === "" ? "none" : dead}`,
  );
} else console.log("  end to end: n/a (Redis or PostgreSQL not reachable)");

if (args.final) {
  console.log("\nsummary");
  const summary = [
    ["audit events in the stream", r?.["caracal.audit.events"]],
    ["audit events stored in the ledger", p?.audit_rows],
    ["tamper alerts (ledger)", p?.tamper_alerts],
    ["outbox rows dispatched", p?.outbox_dispatched],
    ["outbox rows still pending", p?.outbox_pending],
    ["caracal_outbox rows published (upstream Coordinator's table)", p?.coordinator_published],
    ["caracal_outbox rows still pending", p?.coordinator_pending],
    ["session revocations stored", p?.revocations],
    ["agent sessions observed", p?.agent_sessions],
    ...["caracal.sessions.revoke", "caracal.policy.invalidate", "caracal.keys.invalidate", "caracal.agents.lifecycle", "caracal.invocations.lifecycle", "caracal.delegations.invalidate"].map((s) => [`${s} entries`, r?.[s]]),
    ["dead letters (all streams)", r === undefined ? undefined : Object.entries(r).filter(([k]) => k.endsWith(".dead") || k.endsWith(".dlq")).reduce((a, [, v]) => a + v, 0)],
  ].filter(([, v]) => v !== undefined);
  const w = Math.max(...summary.map(([k]) => k.length));
  for (const [k, v] of summary) console.log(`  ${k.padEnd(w)}  ${v}`);
  const notReady = statuses.filter((s) => s.ready !== "yes").map((s) => s.name);
  console.log(notReady.length === 0 ? `  every service ready (${statuses.length})` : `  not ready: ${notReady.join(", ")}`);
}
if (args.state) writeFileSync(args.state, JSON.stringify({ at: now, events: Object.fromEntries(statuses.map((s) => [s.name, s.events])) }));
