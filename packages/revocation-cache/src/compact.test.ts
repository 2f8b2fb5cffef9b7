import { randomUUID } from "node:crypto";

import { describe, expect, it } from "vitest";

import { EPOCH_BASE_S, compactExpiry, compactKey, compactNow, idOfCompactKey } from "./compact.js";

describe("compact entries", () => {
  it("packs lower-case UUIDs into 17 characters, keeps every other id exactly, and never collides", () => {
    const uuid = randomUUID();
    expect(compactKey(uuid)).toHaveLength(17);
    expect(idOfCompactKey(compactKey(uuid))).toBe(uuid);
    for (const id of [uuid.toUpperCase(), "sess-1", "", `${uuid}x`, "u".repeat(16), `u${compactKey(uuid).slice(1)}`]) {
      expect(idOfCompactKey(compactKey(id))).toBe(id);
      expect(compactKey(id)).not.toBe(compactKey(uuid));
    }
    const many = new Set(Array.from({ length: 10_000 }, () => compactKey(randomUUID())));
    expect(many.size).toBe(10_000);
  });

  it("keeps expiries as small integers, live until the second after they pass", () => {
    const now = Date.now();
    const e = compactExpiry(now + 86_400_000);
    expect(Number.isInteger(e)).toBe(true);
    expect(Math.abs(e)).toBeLessThan(2 ** 30);
    expect(e > compactNow(now + 86_400_000 - 1)).toBe(true);
    expect(e > compactNow(now + 86_400_000 + 1000)).toBe(false);
    expect(EPOCH_BASE_S).toBeLessThanOrEqual(Math.floor(now / 1000));
  });
});

describe("compactKeyOfBytes", () => {
  it("equals compactKey of the decoded text, for UUIDs and other ids", async () => {
    const { compactKeyOfBytes } = await import("./compact.js");
    for (const id of [randomUUID(), randomUUID().toUpperCase(), "sess-é-1", "0".repeat(36)]) {
      const buf = Buffer.from(`xx${id}\t1\n`, "utf8");
      expect(compactKeyOfBytes(buf, 2, buf.indexOf(9))).toBe(compactKey(id));
    }
  });
});
