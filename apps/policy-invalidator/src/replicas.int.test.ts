import { existsSync } from "node:fs";

import { activatePolicySetVersion } from "@caracal/outbox";
import { StreamPublisher, StreamSigner, Topics, streamKey } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import type { TestDatabase, TestRedis } from "@caracal/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { OPA_BUNDLE_CONTENT_TYPE } from "./routes.js";
import type { Child } from "./test-support/processes.js";
import { DISPATCHER_MAIN, POLICY_MAIN, TEST_KEY_HEX, addSetVersion, inTx, seedZone, spawnService, waitFor } from "./test-support/processes.js";
import { readBundle } from "./test-support/read-bundle.js";

/** Three real policy invalidator processes and the real outbox dispatcher on one test database and key prefix. */
describe.skipIf(!hasRedis() || !hasPostgres())("policy invalidator replicas", () => {
  let db: TestDatabase;
  let redis: TestRedis;
  const children: Child[] = [];
  let ports: number[] = [];

  const get = (port: number, path: string, headers: Record<string, string> = {}) => fetch(`http://127.0.0.1:${port}${path}`, { headers });
  const etagOf = async (port: number, zone: string) => (await get(port, `/bundles/${zone}.tar.gz`)).headers.get("etag");

  beforeAll(async () => {
    for (const main of [POLICY_MAIN, DISPATCHER_MAIN]) if (!existsSync(main)) throw new Error(`${main} is missing: build first`);
    db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    redis = await createTestRedis("policy");
    // z-ok is active before start; z-unbound has a binding with no active version
    const ok = await seedZone(db.pool, "z-ok", 2);
    await addSetVersion(db.pool, ok.setId, "ok-v1", 1, ok.versionIds);
    await inTx(db.pool, (c) => activatePolicySetVersion(c, "z-ok", ok.setId, "ok-v1"));
    await seedZone(db.pool, "z-unbound", 1);
    // z-broken's only version names a missing module... bound directly (activate would refuse it)
    const broken = await seedZone(db.pool, "z-broken", 1);
    await addSetVersion(db.pool, broken.setId, "broken-v1", 1, [...broken.versionIds, "no-such-module"]);
    await db.pool.query("UPDATE policy_set_bindings SET active_version_id = 'broken-v1' WHERE zone_id = 'z-broken'");
    const env = { DATABASE_URL: db.url, REDIS_URL: redis.url, CARACAL_KEY_PREFIX: redis.keyPrefix };
    for (let i = 0; i < 3; i++) children.push(spawnService(POLICY_MAIN, /policy invalidator running/, { ...env, POLICY_RECONCILE_INTERVAL_MS: "600000" }));
    children.push(spawnService(DISPATCHER_MAIN, /outbox dispatcher running/, { ...env, CARACAL_OUTBOX_POLL_MS: "50" }));
    ports = await Promise.all(children.slice(0, 3).map((c) => c.port));
    await children[3]!.port;
    await Promise.all(ports.map((p) => waitFor(async () => (await get(p, "/readyz")).status === 200, 20_000, `replica ${p} ready`)));
  }, 90_000);

  afterAll(async () => {
    for (const c of children) if (c.process.exitCode === null) c.process.kill("SIGTERM");
    await Promise.all(children.map((c) => c.exited));
    await redis?.close();
    await db?.drop();
  });

  it("an activation commit gives the new revision on all three replicas, answering a waiting long poll", async () => {
    const before = await etagOf(ports[0]!, "z-ok");
    expect(before).toMatch(/^"ok-v1\./);
    for (const p of ports) expect(await etagOf(p, "z-ok")).toBe(before);
    // long polls on every replica, waiting on the current revision
    const polls = ports.map((p) => get(p, "/bundles/z-ok.tar.gz", { "If-None-Match": before!, Prefer: "wait=20", Accept: OPA_BUNDLE_CONTENT_TYPE }));
    await new Promise((r) => setTimeout(r, 300));
    const { rows } = await db.pool.query<{ id: string }>("SELECT id FROM policy_versions WHERE id LIKE 'z-ok-%' ORDER BY id");
    await addSetVersion(db.pool, "z-ok-set", "ok-v2", 2, [rows[0]!.id]);
    const committed = Date.now();
    await inTx(db.pool, (c) => activatePolicySetVersion(c, "z-ok", "z-ok-set", "ok-v2"));
    const answers = await Promise.all(polls);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.headers.get("etag")).toMatch(/^"ok-v2\./);
      expect(a.headers.get("content-type")).toBe(OPA_BUNDLE_CONTENT_TYPE);
      const files = await readBundle(Buffer.from(await a.arrayBuffer()));
      expect([...files.keys()]).toEqual(["/.manifest", `/${rows[0]!.id}.rego`, "/data.json"]);
    }
    expect(Date.now() - committed).toBeLessThan(10_000);
  });

  it("304 on an unchanged ETag, and a long poll with no change ends in 304 after its wait", async () => {
    const etag = (await etagOf(ports[1]!, "z-ok"))!;
    expect((await get(ports[1]!, "/bundles/z-ok.tar.gz", { "If-None-Match": etag })).status).toBe(304);
    const started = Date.now();
    const res = await get(ports[1]!, "/bundles/z-ok.tar.gz", { "If-None-Match": etag, Prefer: "wait=1" });
    expect(res.status).toBe(304);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it("a wrong manifest_sha256 keeps the old bundle, and says why in the metrics", async () => {
    const before = await etagOf(ports[0]!, "z-ok");
    const { rows } = await db.pool.query<{ id: string }>("SELECT id FROM policy_versions WHERE id LIKE 'z-ok-%' ORDER BY id");
    await addSetVersion(db.pool, "z-ok-set", "ok-bad", 3, [rows[1]!.id], "0".repeat(64));
    // bound behind the checks' back, then invalidated as an upstream API would
    await db.pool.query("UPDATE policy_set_bindings SET active_version_id = 'ok-bad' WHERE zone_id = 'z-ok'");
    const publisher = new StreamPublisher({ redis: redis.client, signing: { mode: "stable", signer: StreamSigner.fromHex(TEST_KEY_HEX) }, keyPrefix: redis.keyPrefix, maxLenFor: () => 1000 });
    await publisher.publishBatch([{ stream: Topics.policyInvalidate.stream, fields: { zone_id: "z-ok", policy_set_id: "z-ok-set", policy_set_version_id: "ok-bad" } }]);
    for (const p of ports) {
      await waitFor(async () => /caracal_policy_bundle_build_failures_total\{reason="manifest_sha256_mismatch"\} [1-9]/.test(await (await get(p, "/metrics")).text()), 10_000, "mismatch counted");
      expect(await etagOf(p, "z-ok")).toBe(before);
    }
  });

  it("a broken first bundle and an unbound zone give deny-all", async () => {
    for (const zone of ["z-broken", "z-unbound"]) {
      const res = await get(ports[2]!, `/bundles/${zone}.tar.gz`);
      expect(res.status).toBe(200);
      expect(res.headers.get("etag")).toMatch(/^"deny-all\./);
      const files = await readBundle(Buffer.from(await res.arrayBuffer()));
      expect(files.get("/fallback.rego")?.toString()).toContain('"reason": "no_active_policy_set"');
    }
  });

  it("unsigned and forged entries are dead-lettered once across the three replicas", async () => {
    const key = streamKey(Topics.policyInvalidate.stream, redis.keyPrefix);
    await redis.client.xadd(key, "*", "zone_id", "z-ok", "policy_set_id", "x");
    await redis.client.xadd(key, "*", "zone_id", "z-ok", "policy_set_id", "x", "_sig", "0".repeat(64));
    const dead = streamKey(Topics.policyInvalidate.deadLetterStream!, redis.keyPrefix);
    await waitFor(async () => (await redis.client.xlen(dead)) >= 2, 10_000, "dead letters");
    await new Promise((r) => setTimeout(r, 1000));
    expect(await redis.client.xlen(dead)).toBe(2);
  });
  it("key invalidation drops and reloads one zone only; the JWKS ETag changes on rotation", async () => {
    const jwk = (x: string) => JSON.stringify({ kty: "EC", crv: "P-256", x, y: x });
    await db.pool.query("INSERT INTO zone_public_keys (zone_id, kid, public_jwk) VALUES ('z-ok', 'k1', $1::jsonb), ('z-unbound', 'u1', $2::jsonb)", [jwk("a"), jwk("b")]);
    const jwks = async (p: number, zone: string) => {
      const res = await get(p, `/v1/zones/${zone}/jwks.json`);
      return { etag: res.headers.get("etag"), body: (await res.json()) as { keys: Array<{ kid: string }> } };
    };
    const ok1 = await Promise.all(ports.map((p) => jwks(p, "z-ok")));
    const other1 = await Promise.all(ports.map((p) => jwks(p, "z-unbound")));
    for (const j of ok1) expect(j.body.keys.map((k) => k.kid)).toEqual(["k1"]);
    expect((await get(ports[0]!, "/v1/zones/z-ok/jwks.json", { "If-None-Match": ok1[0]!.etag! })).status).toBe(304);
    // rotation in both zones' rows, but only z-ok is invalidated
    await db.pool.query("INSERT INTO zone_public_keys (zone_id, kid, public_jwk, created_at) VALUES ('z-ok', 'k2', $1::jsonb, now() + interval '1 second'), ('z-unbound', 'u2', $2::jsonb, now())", [jwk("c"), jwk("d")]);
    const publisher = new StreamPublisher({ redis: redis.client, signing: { mode: "stable", signer: StreamSigner.fromHex(TEST_KEY_HEX) }, keyPrefix: redis.keyPrefix, maxLenFor: () => 1000 });
    await publisher.publishBatch([{ stream: Topics.keysInvalidate.stream, fields: { zone_id: "z-ok", key_id: "k2", reason: "rotation" } }]);
    for (const [i, p] of ports.entries()) {
      await waitFor(async () => (await jwks(p, "z-ok")).etag !== ok1[i]!.etag, 10_000, "rotated JWKS");
      expect((await jwks(p, "z-ok")).body.keys.map((k) => k.kid)).toEqual(["k2", "k1"]);
      // the other zone was not invalidated: its cached keys still serve
      expect(await jwks(p, "z-unbound")).toEqual(other1[i]);
    }
    expect((await get(ports[0]!, "/v1/zones/no-such-zone/jwks.json")).status).toBe(404);
  });
});
