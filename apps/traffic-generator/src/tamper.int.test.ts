import { randomBytes } from "node:crypto";

import { StreamSigner, Topics, decodeFieldList, streamKey, verifyAuditFrame } from "@caracal/streams-core";
import type { Fields } from "@caracal/streams-core";
import { createMigratedDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";

import { parseTamperKinds, runTamper } from "./tamper.js";
import type { TamperKind } from "./tamper.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe("parseTamperKinds", () => {
  it("reads a comma list, all, or nothing, and names unknown kinds", () => {
    expect(parseTamperKinds(undefined)).toEqual([]);
    expect(parseTamperKinds("")).toEqual([]);
    expect(parseTamperKinds("forge, alter,forge")).toEqual(["forge", "alter"]);
    expect(parseTamperKinds("all")).toEqual(["forge", "drop", "alter", "delete"]);
    expect(() => parseTamperKinds("forge,explode")).toThrow(/explode/);
  });
});

describe.skipIf(!hasRedis() || !hasPostgres())("runTamper", () => {
  it("forges with another key, leaves a hole in a genuine producer chain, alters and deletes ledger rows", async () => {
    const redis = await createTestRedis("tamper");
    cleanups.push(() => redis.close());
    const db = await createMigratedDatabase();
    cleanups.push(() => db.drop());
    const auditKey = randomBytes(32);
    const realSigner = new StreamSigner(randomBytes(32));
    // 40 chained rows in zone z (content is irrelevant here: only which rows change)
    await db.pool.query(
      `INSERT INTO audit_events (id, zone_id, event_type, decision, evaluation_status, request_id, payload_json, determining_policies_json, diagnostics_json, hmac_chain, occurred_at, chain_seq, content_sha256)
       SELECT 'e' || g, 'z', 't', 'allow', 'complete', 'r', '{}', '[]', '[]', 'h' || g, now(), g, 'c' || g FROM generate_series(1, 40) g`,
    );
    const done: TamperKind[] = [];
    const controller = new AbortController();
    await runTamper(
      { kinds: ["forge", "drop", "alter", "delete"], everyMs: 100, redis: redis.client, pool: db.pool, keyPrefix: redis.keyPrefix, auditKey, zones: ["z"], logger: pino({ level: "silent" }), onTamper: (k) => {
        done.push(k);
        if (done.length === 4) controller.abort();
      } },
      controller.signal,
    );
    expect(done).toEqual(["forge", "drop", "alter", "delete"]);

    const frames = (await redis.client.xrange(streamKey(Topics.auditEvents.stream, redis.keyPrefix), "-", "+")).map(([, f]) => decodeFieldList(f) as Fields);
    expect(frames).toHaveLength(3);
    expect(() => verifyAuditFrame(frames[0]!, auditKey)).toThrow();
    const chain = frames.slice(1).map((f) => verifyAuditFrame(f, auditKey).event.chain);
    expect(chain.map((c) => c?.seq)).toEqual([1, 3]);
    const revocations = (await redis.client.xrange(streamKey(Topics.sessionsRevoke.stream, redis.keyPrefix), "-", "+")).map(([, f]) => decodeFieldList(f) as Fields);
    expect(revocations).toHaveLength(1);
    expect(realSigner.verify(Topics.sessionsRevoke.stream, revocations[0]!)).not.toBe("valid");

    const rows = await db.pool.query<{ id: string; decision: string }>("SELECT id, decision FROM audit_events WHERE zone_id = 'z' ORDER BY chain_seq");
    expect(rows.rows).toHaveLength(39);
    expect(rows.rows.filter((r) => r.decision === "deny")).toHaveLength(1);
  });
});
