/** StreamPublisher against real Redis: order, MAXLEN ~, `_sig`, and fields byte for byte. */
import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { Fields } from "./codec.js";
import { decodeFieldList } from "./codec.js";
import { StreamPublisher } from "./publisher.js";
import { Topics, streamKey } from "./registry.js";
import { StreamSigner } from "./signing.js";
import type { SignaturePolicy } from "./signing.js";
import { newKeyHex } from "./test-support/harness.js";

const topic = Topics.sessionsRevoke;

describe.skipIf(!hasRedis())("StreamPublisher on Redis", () => {
  let r: TestRedis;
  let policy: SignaturePolicy;
  beforeEach(async () => {
    r = await createTestRedis("pub");
    policy = { mode: "stable", signer: StreamSigner.fromHex(newKeyHex()) };
  });
  afterEach(async () => {
    await r.close();
  });

  async function entries(stream = topic.stream): Promise<Array<{ id: string; fields: Fields }>> {
    const rows = (await r.client.xrange(streamKey(stream, r.keyPrefix), "-", "+")) as Array<[string, string[]]>;
    return rows.map(([id, list]) => ({ id, fields: decodeFieldList(list) ?? {} }));
  }

  it("keeps batch order and returns each entry's id at its index", async () => {
    const publisher = new StreamPublisher({ redis: r.client, signing: policy, keyPrefix: r.keyPrefix });
    // Larger than one internal pipeline chunk, so chunk order is covered too.
    const batch = Array.from({ length: 1_250 }, (_, i) => ({
      stream: i % 3 === 0 ? topic.stream : Topics.keysInvalidate.stream,
      fields: { zone_id: "z", n: String(i) },
    }));
    const outcomes = await publisher.publishBatch(batch);
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const revoke = await entries();
    const keys = await entries(Topics.keysInvalidate.stream);
    expect(revoke.map((e) => e.fields.n)).toEqual(batch.filter((_, i) => i % 3 === 0).map((b) => b.fields.n));
    expect(keys.map((e) => e.fields.n)).toEqual(batch.filter((_, i) => i % 3 !== 0).map((b) => b.fields.n));
    const idOf = new Map([...revoke, ...keys].map((e) => [e.fields.n, e.id]));
    outcomes.forEach((o, i) => expect(o.ok && o.id).toBe(idOf.get(String(i))));
  });

  it("applies MAXLEN ~ so that the stream stays near its bound", async () => {
    const publisher = new StreamPublisher({ redis: r.client, signing: policy, keyPrefix: r.keyPrefix, maxLenFor: () => 100 });
    for (let round = 0; round < 10; round++) {
      await publisher.publishBatch(Array.from({ length: 100 }, (_, i) => ({ stream: topic.stream, fields: { n: `${round}-${i}` } })));
    }
    const len = await r.client.xlen(streamKey(topic.stream, r.keyPrefix));
    // "~" trims whole radix-tree nodes (100 entries by default): the length stays within a node of the bound.
    expect(len).toBeGreaterThanOrEqual(100);
    expect(len).toBeLessThan(300);
    const all = await entries();
    expect(all.at(-1)!.fields.n).toBe("9-99");
  });

  it("signs every entry over the logical stream name with a valid `_sig`, replacing a caller's `_sig`", async () => {
    const publisher = new StreamPublisher({ redis: r.client, signing: policy, keyPrefix: r.keyPrefix });
    await publisher.publish(topic.stream, { zone_id: "z", reason: "r", session_id: "s", _sig: "forged" });
    const [entry] = await entries();
    expect(entry!.fields._sig).toMatch(/^[0-9a-f]{64}$/);
    expect(policy.signer!.verify(topic.stream, entry!.fields)).toBe("valid");
    expect(policy.signer!.verify(streamKey(topic.stream, r.keyPrefix), entry!.fields)).toBe("invalid");
  });

  it("keeps every field intact: newlines, '=', unicode, empty strings, long values", async () => {
    const publisher = new StreamPublisher({ redis: r.client, signing: policy, keyPrefix: r.keyPrefix });
    const fields: Fields = {
      zone_id: "zone=1\nzone=2",
      reason: "line1\nline2\r\n",
      "key=with=equals": "v=1",
      unicode: "révocation ✓ 🔑 日本",
      empty: "",
      json: JSON.stringify({ a: [1, "x\n"], b: null }),
      long: "x".repeat(100_000),
    };
    await publisher.publish(topic.stream, fields);
    const [entry] = await entries();
    const { _sig, _sig2, ...rest } = entry!.fields;
    expect(_sig2).toMatch(/^[0-9a-f]{64}$/);
    expect(rest).toEqual(fields);
    expect(policy.signer!.verify(topic.stream, entry!.fields)).toBe("valid");
    expect(_sig).toBeDefined();
  });

  it("publishes unsigned in dev mode without a key", async () => {
    const publisher = new StreamPublisher({ redis: r.client, signing: { mode: "dev", signer: undefined }, keyPrefix: r.keyPrefix });
    await publisher.publish(topic.stream, { zone_id: "z" });
    const [entry] = await entries();
    expect(entry!.fields).toEqual({ zone_id: "z" });
  });
});
