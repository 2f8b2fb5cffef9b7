import { randomBytes } from "node:crypto";

import { StreamPublisher, StreamSigner } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import { pino } from "pino";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";

import { KeyCache } from "./key-cache.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const jwk = (x: string) => ({ kty: "EC", crv: "P-256", x, y: "y".repeat(43) });

async function waitFor(what: string, probe: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.skipIf(!hasRedis() || !hasPostgres())("KeyCache (fan-out on caracal.keys.invalidate)", () => {
  it("every replica reloads the invalidated zone only; a failed reload keeps the keys held, a zone never loaded gets none", async () => {
    const redis = await createTestRedis("keys");
    cleanups.push(() => redis.close());
    const db = await createMigratedDatabase();
    db.pool.on("error", () => undefined);
    cleanups.push(() => db.drop());
    await db.pool.query(`INSERT INTO zone_public_keys (zone_id, kid, public_jwk) VALUES ('z1', 'k1', $1), ('z2', 'k2', $2)`, [jwk("a".repeat(43)), jwk("b".repeat(43))]);
    const signing = { mode: "stable" as const, signer: new StreamSigner(randomBytes(32)) };
    const replicas = [0, 1, 2].map((i) => {
      const cache = new KeyCache({ redis: redis.client, pool: db.pool, signing, logger: pino({ level: "silent" }), consumerName: `r${i}`, keyPrefix: redis.keyPrefix, registry: new Registry(), blockMs: 100 });
      const controller = new AbortController();
      const done = cache.run(controller.signal);
      cleanups.push(async () => {
        controller.abort();
        await done;
      });
      return cache;
    });
    for (const r of replicas) {
      expect((await r.get("z1"))?.jwks.keys.map((k) => k.kid)).toEqual(["k1"]);
      expect((await r.get("z2"))?.jwks.keys.map((k) => k.kid)).toEqual(["k2"]);
    }
    const etagBefore = (await replicas[0]!.get("z1"))!.etag;
    await waitFor("every replica reading", () => replicas.every((r) => r.lastContactAt !== undefined));

    // rotation in z1: a new key, the old one retired, then the invalidation
    await db.pool.query(`INSERT INTO zone_public_keys (zone_id, kid, public_jwk) VALUES ('z1', 'k1b', $1)`, [jwk("c".repeat(43))]);
    await db.pool.query(`UPDATE zone_public_keys SET not_after = now() - interval '1 second' WHERE kid = 'k1'`);
    const publisher = new StreamPublisher({ redis: redis.client, signing, keyPrefix: redis.keyPrefix });
    await publisher.publish("caracal.keys.invalidate", { zone_id: "z1", key_id: "k1b", reason: "rotated" });
    for (const r of replicas) await waitFor("z1 reloaded", async () => (await r.get("z1"))?.jwks.keys[0]?.kid === "k1b");
    for (const r of replicas) {
      expect(r.zones.loads.get("z1")).toBe(2);
      expect(r.zones.loads.get("z2")).toBe(1); // untouched
      expect((await r.get("z1"))?.etag).not.toBe(etagBefore);
    }

    // the store fails: an invalidation keeps the keys held (fail-open), a zone never loaded has none (fail-closed)
    await db.pool.query("ALTER TABLE zone_public_keys RENAME TO zone_public_keys_away");
    await publisher.publish("caracal.keys.invalidate", { zone_id: "z2", reason: "rotated" });
    for (const r of replicas) await waitFor("z2 reload tried", () => r.zones.loads.get("z2") === 2);
    for (const r of replicas) {
      expect((await r.get("z2"))?.jwks.keys.map((k) => k.kid)).toEqual(["k2"]);
      expect(await r.get("z3")).toBeUndefined();
    }
    await db.pool.query("ALTER TABLE zone_public_keys_away RENAME TO zone_public_keys");
  });
});
