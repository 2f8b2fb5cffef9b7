/** The observers' JSON endpoints (derived state from PostgreSQL, dead letters from Redis). */
import type { RedisClient } from "@caracal/streams-core";
import { Hono } from "hono";
import type pg from "pg";

import { deadLetterStreams, listDeadLetters } from "./dead-letters.js";

const limitOf = (raw: string | undefined, def: number, max: number) => {
  const n = Number(raw ?? def);
  return Number.isInteger(n) && n > 0 ? Math.min(n, max) : def;
};

export function observerRoutes(deps: { pool: pg.Pool; redis: RedisClient; keyPrefix: string }): Hono {
  const app = new Hono();
  const { pool } = deps;

  app.get("/v1/zones/:zone/agent-sessions/:id", async (c) => {
    const zone = c.req.param("zone");
    const id = c.req.param("id");
    const s = await pool.query<{ status: string; occurred_at: Date }>(
      "SELECT status, occurred_at FROM observed_agent_sessions WHERE zone_id = $1 AND agent_session_id = $2",
      [zone, id],
    );
    const row = s.rows[0];
    if (row === undefined) return c.json({ error: "not_found" }, 404);
    const h = await pool.query<{ event: string; occurred_at: Date; stream_id: string; fields: unknown }>(
      `SELECT event, occurred_at, stream_id, fields FROM observed_agent_session_events
        WHERE zone_id = $1 AND agent_session_id = $2 ORDER BY occurred_at, stream_id LIMIT 1000`,
      [zone, id],
    );
    return c.json({
      zone_id: zone,
      agent_session_id: id,
      status: row.status,
      occurred_at: row.occurred_at.toISOString(),
      history: h.rows.map((r) => ({ event: r.event, occurred_at: r.occurred_at.toISOString(), id: r.stream_id, fields: r.fields })),
    });
  });

  app.get("/v1/zones/:zone/invocations", async (c) => {
    const zone = c.req.param("zone");
    const state = c.req.query("state");
    const service = c.req.query("service");
    const limit = limitOf(c.req.query("limit"), 100, 1000);
    const r = await pool.query<{ invocation_id: string; service_id: string | null; state: string; last_event: string; started_at: Date; last_at: Date; finished_at: Date | null; duration_ms: string | null }>(
      `SELECT invocation_id, service_id, state, last_event, started_at, last_at, finished_at, duration_ms FROM observed_invocations
        WHERE zone_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR service_id = $3)
        ORDER BY last_at DESC LIMIT $4`,
      [zone, state ?? null, service ?? null, limit],
    );
    const counts = await pool.query<{ service_id: string | null; running: number }>(
      "SELECT service_id, count(*)::int AS running FROM observed_invocations WHERE zone_id = $1 AND state = 'running' GROUP BY service_id ORDER BY service_id",
      [zone],
    );
    return c.json({
      zone_id: zone,
      running_by_service: counts.rows.map((x) => ({ service_id: x.service_id, running: x.running })),
      invocations: r.rows.map((x) => ({
        invocation_id: x.invocation_id,
        service_id: x.service_id,
        state: x.state,
        last_event: x.last_event,
        started_at: x.started_at.toISOString(),
        last_at: x.last_at.toISOString(),
        finished_at: x.finished_at?.toISOString() ?? null,
        duration_ms: x.duration_ms === null ? null : Number(x.duration_ms),
      })),
    });
  });

  app.get("/v1/zones/:zone/delegation-epoch", async (c) => {
    const zone = c.req.param("zone");
    const r = await pool.query<{ epoch: string; last_event: string; updated_at: Date }>(
      "SELECT epoch::text AS epoch, last_event, updated_at FROM observed_delegation_epochs WHERE zone_id = $1",
      [zone],
    );
    const row = r.rows[0];
    if (row === undefined) return c.json({ error: "not_found" }, 404);
    return c.json({ zone_id: zone, epoch: Number(row.epoch), last_event: row.last_event, updated_at: row.updated_at.toISOString() });
  });

  app.get("/v1/events", async (c) => {
    const stream = c.req.query("stream");
    if (!stream) return c.json({ error: "stream is required" }, 400);
    const zone = c.req.query("zone");
    const limit = limitOf(c.req.query("limit"), 50, 1000);
    const r = await pool.query<{ stream_id: string; zone_id: string | null; event: string | null; fields: unknown; received_at: Date }>(
      `SELECT stream_id, zone_id, event, fields, received_at FROM observed_events
        WHERE stream = $1 AND ($2::text IS NULL OR zone_id = $2) ORDER BY seq DESC LIMIT $3`,
      [stream, zone ?? null, limit],
    );
    return c.json({
      stream,
      events: r.rows.map((x) => ({ id: x.stream_id, zone_id: x.zone_id, event: x.event, fields: x.fields, received_at: x.received_at.toISOString() })),
    });
  });

  app.get("/v1/dead-letters", async (c) => {
    const stream = c.req.query("stream");
    const known = deadLetterStreams();
    if (!stream || !known.includes(stream)) return c.json({ error: "stream must be one of the dead-letter streams", streams: known }, 400);
    const limit = limitOf(c.req.query("limit"), 50, 1000);
    const letters = await listDeadLetters(deps.redis, deps.keyPrefix, stream, limit, c.req.query("before"));
    return c.json({ stream, dead_letters: letters });
  });

  return app;
}
