import fc from "fast-check";
import { describe, expect, it } from "vitest";

import { MAX_BACKOFF_MS, backoffMs } from "./backoff.js";

describe("backoffMs", () => {
  it("doubles from the base and is capped at 60 s", () => {
    expect([1, 2, 3, 4].map((a) => backoffMs(a, 500, 0.999999))).toEqual([500, 1000, 2000, 4000]);
    expect(backoffMs(8, 500, 0.999999)).toBe(MAX_BACKOFF_MS);
    expect(backoffMs(1000, 500, 0.999999)).toBe(MAX_BACKOFF_MS);
  });
  it("jitters within [nominal/2, nominal], never above the cap", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 60_000 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (attempt, base, r) => {
        const nominal = Math.min(MAX_BACKOFF_MS, base * 2 ** Math.min(attempt - 1, 30));
        const d = backoffMs(attempt, base, r);
        return d >= Math.floor(nominal / 2) && d <= Math.ceil(nominal) && d <= MAX_BACKOFF_MS;
      }),
    );
  });
});
