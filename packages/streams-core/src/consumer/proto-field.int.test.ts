/**
 * Issue 15 item 4: a signed entry with a field named `__proto__` (or `constructor`) is verified and handled
 * with that field, never rejected as signature_invalid because decoding dropped it.
 */
import { createTestRedis, hasRedis } from "@caracal/testkit";
import type { TestRedis } from "@caracal/testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { Fields } from "../codec.js";
import { deadLetterKey, publishRevocations, stablePolicy, startConsumer, waitFor } from "../test-support/harness.js";

describe.skipIf(!hasRedis())("fields named like Object.prototype members", () => {
  let r: TestRedis;
  beforeEach(async () => {
    r = await createTestRedis("proto");
  });
  afterEach(async () => {
    await r.close();
  });

  for (const delivery of ["group", "fanout"] as const) {
    it(`a signed entry with __proto__ and constructor fields is verified and handled with them (${delivery})`, async () => {
      const policy = stablePolicy();
      const fields = JSON.parse('{"zone_id":"z","reason":"r","session_id":"s","__proto__":"p","constructor":"c"}') as Fields;
      expect(Object.keys(fields)).toContain("__proto__");
      const [id] = await publishRevocations(r.client, policy, r.keyPrefix, [fields]);
      const seen: Fields[] = [];
      const c = startConsumer<unknown>({ redis: r.client, signing: policy, keyPrefix: r.keyPrefix, delivery, handleMessage: async (m) => void seen.push(m.fields as Fields) });
      await waitFor(() => seen.length === 1, 10_000, "handled");
      await c.stop();
      expect(Object.keys(seen[0]!)).toEqual(expect.arrayContaining(["__proto__", "constructor", "_sig"]));
      expect(seen[0]!["__proto__"]).toBe("p");
      expect(await r.client.xlen(deadLetterKey(r.keyPrefix))).toBe(0);
      expect(id).toMatch(/^\d+-\d+$/);
    });
  }
});
