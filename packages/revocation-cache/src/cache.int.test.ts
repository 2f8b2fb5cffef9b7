/** The cache and its hono guard against real Redis and PostgreSQL. */
import { randomUUID } from "node:crypto";

import { Topics, StreamPublisher, signaturePolicy } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, type TestDatabase, type TestRedis } from "@caracal/testkit";
import { Hono } from "hono";
import pg from "pg";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { RevocationCache } from "./cache.js";
import { revocationGuard, revocationRoutes } from "./http.js";

const KEY_HEX = "ab".repeat(32);

describe("RevocationCache", () => {
  let redis: TestRedis;
  let db: TestDatabase;
  let pool: pg.Pool;
  let controller: AbortController;

  beforeEach(async () => {
    redis = await createTestRedis("rc");
    db = await createMigratedDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 3 });
    controller = new AbortController();
  });
  afterEach(async () => {
    controller.abort();
    await pool.end();
    await db.drop();
    await redis.close();
  });

  const make = (options: { maxContactAgeMs?: number } = {}) =>
    new RevocationCache({
      redis: redis.client,
      pool,
      signing: signaturePolicy({ mode: "rc", keyHex: KEY_HEX }),
      consumer: "c-1",
      keyPrefix: redis.keyPrefix,
      blockMs: 100,
      maxContactAgeMs: options.maxContactAgeMs ?? 2000,
      registry: new Registry(),
      logger: pino({ level: "silent" }),
    });

  it("is unknown before it is seeded, then seeds from the table (expired rows left out)", async () => {
    const seeded = randomUUID();
    const expired = randomUUID();
    await pool.query(
      `INSERT INTO session_revocations (zone_id, anchor_kind, anchor_id, reason, expires_at, source_stream_id) VALUES
       ('z', 'session_id', $1, 'r', now() + interval '1 hour', '1-0'), ('z', 'sid', $2, 'r', now() - interval '1 second', '2-0')`,
      [seeded, expired],
    );
    const cache = make();
    expect(cache.check("z", { session_id: seeded })).toBe("unknown");
    const run = await cache.start(controller.signal);
    await waitUntil(() => cache.fresh);
    expect(cache.check("z", { session_id: seeded })).toBe("revoked");
    expect(cache.check("z", { sid: expired })).toBe("active");
    controller.abort();
    await run.done;
  });

  it("seeds ids of any form exactly: upper-case UUIDs, other text, COPY-escaped backslashes and tabs", async () => {
    const ids = [randomUUID().toUpperCase(), `sess-é-${randomUUID()}`, `a\\b\tc-${randomUUID()}`, `t\t${randomUUID()}`];
    await pool.query(
      `INSERT INTO session_revocations (zone_id, anchor_kind, anchor_id, reason, expires_at, source_stream_id)
       SELECT 'z', 'session_id', id, 'r', now() + interval '1 hour', '3-0' FROM unnest($1::text[]) AS t(id)`,
      [ids],
    );
    const cache = make();
    const run = await cache.start(controller.signal);
    await waitUntil(() => cache.fresh);
    for (const id of ids) expect(cache.check("z", { session_id: id })).toBe("revoked");
    expect(cache.check("z", { session_id: ids[0]!.toLowerCase() })).toBe("active");
    controller.abort();
    await run.done;
  });

  it("hears the stream after the seed", async () => {
    const cache = make();
    const run = await cache.start(controller.signal);
    await waitUntil(() => cache.fresh);
    const heard = randomUUID();
    const publisher = new StreamPublisher({ redis: redis.client, signing: signaturePolicy({ mode: "rc", keyHex: KEY_HEX }), keyPrefix: redis.keyPrefix });
    await publisher.publish(Topics.sessionsRevoke.stream, { zone_id: "z", reason: "r", agent_session_id: heard });
    await waitUntil(() => cache.check("other-zone", { agent_session_id: heard }) === "revoked");
    controller.abort();
    await run.done;
  });

  it("the guard answers 403 revoked, 503 unknown, and lets an active mandate through; the routes answer from the cache", async () => {
    const revoked = randomUUID();
    await pool.query(
      `INSERT INTO session_revocations (zone_id, anchor_kind, anchor_id, reason, expires_at, source_stream_id) VALUES ('z', 'root_sid', $1, 'r', now() + interval '1 hour', '1-0')`,
      [revoked],
    );
    const cache = make();
    const app = new Hono();
    app.route("/", revocationRoutes(cache));
    app.use("/resource/*", revocationGuard(cache, (c) => {
      const sid = c.req.header("x-root-sid");
      return sid === undefined ? undefined : { zone: "z", anchors: { root_sid: sid } };
    }));
    app.get("/resource/x", (c) => c.text("ok"));
    const unknown = await app.request("/resource/x", { headers: { "x-root-sid": randomUUID() } });
    expect(unknown.status).toBe(503);
    expect(unknown.headers.get("retry-after")).toBe("5");
    expect(await unknown.json()).toMatchObject({ error: "revocation_state_unknown" });
    await cache.start(controller.signal);
    await waitUntil(() => cache.fresh);
    expect((await app.request("/resource/x", { headers: { "x-root-sid": revoked } })).status).toBe(403);
    expect((await app.request("/resource/x", { headers: { "x-root-sid": randomUUID() } })).status).toBe(200);
    expect((await app.request("/resource/x")).status).toBe(401);
    const one = await app.request(`/v1/zones/z/revocations/root_sid/${revoked}`);
    expect(await one.json()).toMatchObject({ revoked: true });
    const batch = await app.request("/v1/zones/z/revocations:check", { method: "POST", body: JSON.stringify({ anchors: { session_id: "a", root_sid: revoked } }), headers: { "content-type": "application/json" } });
    expect(await batch.json()).toMatchObject({ revoked: true, revoked_anchors: ["root_sid"] });
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
