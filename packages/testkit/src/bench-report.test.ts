import { availableParallelism } from "node:os";

import { describe, expect, it } from "vitest";

import { coreBoundMetrics } from "./bench-report.js";

describe("coreBoundMetrics", () => {
  const cores = availableParallelism();

  it("bounds the ratio by the CPU per item spread over every core", () => {
    // 1,000 items using 30 ms of this process, 20 ms of PostgreSQL and 10 ms of Redis: 60 µs per item;
    // measured in 50 ms against a baseline of 25 ms (25 µs per item): ratio 0.5
    const metrics = coreBoundMetrics("path", { node: 0.03, postgres: 0.02, redis: 0.01 }, 1000, 0.05, 0.025);
    expect(metrics).toBeDefined();
    const [cpu, bound, overlap] = metrics!;
    expect(cpu!.value).toBe(60);
    // all cores busy: 60 / cores µs per item, against a baseline of 25 µs per item
    const expectedBound = Math.round((25 / (60 / cores)) * 1000) / 1000;
    expect(bound!.value).toBe(expectedBound);
    expect(bound!.name).toContain(`${cores} cores`);
    expect(overlap!.value).toBe(Math.round((0.5 / expectedBound) * 1000) / 1000);
  });

  it("gives nothing when a server's CPU is unknown", () => {
    expect(coreBoundMetrics("path", { node: 1, postgres: undefined, redis: 1 }, 10, 2e-4, 1e-4)).toBeUndefined();
    expect(coreBoundMetrics("path", { node: 1, postgres: 1, redis: undefined }, 10, 2e-4, 1e-4)).toBeUndefined();
  });
});
