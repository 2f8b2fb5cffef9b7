/** The observers on a real three-master Redis Cluster: streams on different nodes, derived state written. */
import { StreamPublisher, Topics, signaturePolicy } from "@caracal/streams-core";
import { createMigratedDatabase, hasPostgres, redisClusterAvailable, startRedisCluster } from "@caracal/testkit";
import { Hono } from "hono";
import { pino } from "pino";
import { Registry } from "prom-client";
import { describe, it } from "vitest";

import { startObservers } from "./app.js";
import { loadConfig } from "./config.js";

const KEY = "c4".repeat(32);
const available = hasPostgres() && (await redisClusterAvailable());

describe.skipIf(!available)("observers on a Redis Cluster", () => {
  it("derives agent sessions, invocations and the delegation epoch from streams spread over the nodes", async () => {
    const cluster = await startRedisCluster();
    const db = await createMigratedDatabase();
    const client = cluster.connect();
    const controller = new AbortController();
    try {
      const config = loadConfig({ DATABASE_URL: db.url, REDIS_URL: "redis://127.0.0.1:1", STREAMS_HMAC_KEY: KEY, CARACAL_MODE: "stable", HOSTNAME: "obs-c", OBSERVERS_DEAD_LETTERS: "false", PORT: "0" });
      const app = await startObservers(
        { config, logger: pino({ level: "silent" }), redis: client, pool: db.pool, registry: new Registry(), signal: controller.signal, http: new Hono(), ready: () => undefined, onStop: () => undefined },
        { blockMs: 100 },
      );
      const publisher = new StreamPublisher({ redis: client, signing: signaturePolicy({ mode: "stable", keyHex: KEY }) });
      await publisher.publish(Topics.agentsLifecycle.stream, { event: "spawn", zone_id: "z", agent_session_id: "s1", occurred_at: "2026-01-01T00:00:00Z" });
      await publisher.publish(Topics.agentsLifecycle.stream, { event: "terminate", zone_id: "z", agent_session_id: "s1", occurred_at: "2026-01-01T00:00:05Z" });
      await publisher.publish(Topics.invocationsLifecycle.stream, { event: "invocation.started", zone_id: "z", invocation_id: "i1", service_id: "svc" });
      await publisher.publish(Topics.delegationsInvalidate.stream, { event: "edge_create", zone_id: "z", epoch: "7", delegation_edge_id: "e1" });
      const deadline = Date.now() + 30_000;
      for (;;) {
        const s = await db.pool.query("SELECT status FROM observed_agent_sessions WHERE zone_id = 'z' AND agent_session_id = 's1'").catch(() => ({ rows: [] as Array<{ status: string }> }));
        const e = await db.pool.query("SELECT epoch::text AS epoch FROM observed_delegation_epochs WHERE zone_id = 'z'").catch(() => ({ rows: [] as Array<{ epoch: string }> }));
        const inv = await db.pool.query("SELECT count(*)::int AS n FROM observed_invocations WHERE zone_id = 'z'").catch(() => ({ rows: [{ n: 0 }] }));
        if (s.rows[0]?.status === "terminate" && e.rows[0]?.epoch === "7" && inv.rows[0]?.n === 1) break;
        if (Date.now() > deadline) throw new Error(`not derived: ${JSON.stringify([s.rows, e.rows, inv.rows])}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      controller.abort();
      await app.done;
    } finally {
      controller.abort();
      client.disconnect();
      await db.drop();
      await cluster.stop();
    }
  }, 90_000);
});
