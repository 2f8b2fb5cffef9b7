// One line of live numbers for scripts/demo.sh: stream lengths, ingested audit rows, pending outbox rows.
// Lives in this app so that `pg` and `ioredis` resolve from its dependencies. Reads DATABASE_URL,
// REDIS_URL and CARACAL_KEY_PREFIX; prints "n/a" for what it cannot reach instead of failing.
import process from "node:process";

import { Redis } from "ioredis";
import pg from "pg";

const prefix = process.env.CARACAL_KEY_PREFIX ?? "";
const streams = {
  audit: "caracal.audit.events",
  audit_dlq: "caracal.audit.events.dlq",
  revoke: "caracal.sessions.revoke",
  policy: "caracal.policy.invalidate",
};

async function redisNumbers() {
  const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: 1, connectTimeout: 2000, lazyConnect: true });
  redis.on("error", () => undefined);
  try {
    await redis.connect();
    const out = {};
    for (const [name, key] of Object.entries(streams)) out[name] = await redis.xlen(prefix + key);
    return out;
  } catch {
    return Object.fromEntries(Object.keys(streams).map((k) => [k, "n/a"]));
  } finally {
    redis.disconnect();
  }
}

async function pgNumbers() {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    const { rows } = await client.query(
      `SELECT (SELECT count(*) FROM audit_events)::text AS audit_rows,
              (SELECT count(DISTINCT zone_id) FROM audit_events)::text AS zones,
              (SELECT count(*) FROM audit_events WHERE tamper_detected)::text AS tampered,
              (SELECT count(*) FROM event_outbox WHERE dispatched_at IS NULL)::text AS outbox_pending,
              (SELECT count(*) FROM event_outbox WHERE dispatched_at IS NOT NULL)::text AS outbox_dispatched`,
    );
    return rows[0];
  } catch {
    return { audit_rows: "n/a", zones: "n/a", tampered: "n/a", outbox_pending: "n/a", outbox_dispatched: "n/a" };
  } finally {
    await client.end().catch(() => undefined);
  }
}

const [r, p] = await Promise.all([redisNumbers(), pgNumbers()]);
const time = new Date().toISOString().slice(11, 19);
console.log(
  `[${time}] streams: audit=${r.audit} audit.dlq=${r.audit_dlq} revoke=${r.revoke} policy=${r.policy} | ` +
    `audit_events=${p.audit_rows} (zones=${p.zones}, tampered=${p.tampered}) | ` +
    `outbox pending=${p.outbox_pending} dispatched=${p.outbox_dispatched}`,
);
