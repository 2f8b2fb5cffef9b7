import { describe, expect, it } from "vitest";

import { ConfigError } from "../errors.js";
import type { RedisClient } from "../redis.js";
import { Topics } from "../registry.js";
import { StreamConsumer } from "./stream-consumer.js";

const base = {
  redis: {} as RedisClient,
  topic: Topics.sessionsRevoke,
  group: Topics.sessionsRevoke.groups.sts,
  consumer: "c",
  signing: { mode: "dev" as const, signer: undefined },
};

describe("StreamConsumer options", () => {
  it("names every bad option at once", () => {
    let error: unknown;
    try {
      new StreamConsumer({ ...base, batchSize: 0, maxDeliveries: -1 });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    expect(problems).toMatch(/exactly one of handleMessage \/ handleBatch/);
    expect(problems).toMatch(/batchSize/);
    expect(problems).toMatch(/maxDeliveries/);
  });

  it("refuses maxDeliveries beside explicit steps (the bound is then a step, limitDeliveries)", () => {
    expect(() => new StreamConsumer({ ...base, steps: [], maxDeliveries: 3, handleMessage: async () => undefined })).toThrow(/limitDeliveries/);
    expect(() => new StreamConsumer({ ...base, steps: [], handleMessage: async () => undefined })).not.toThrow();
  });

  it("rejects both handlers at once", () => {
    expect(() => new StreamConsumer({ ...base, handleMessage: async () => undefined, handleBatch: async () => undefined })).toThrow(ConfigError);
  });

  it("starts idle; close() before run() is idempotent and ends stopped", async () => {
    const c = new StreamConsumer({ ...base, handleMessage: async () => undefined });
    expect(c.state).toBe("idle");
    await Promise.all([c.close(), c.close()]);
    expect(c.state).toBe("stopped");
  });
});
