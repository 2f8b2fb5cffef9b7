import { randomBytes } from "node:crypto";

import { redisUrl } from "@caracal/testkit";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";

import { ConfigError } from "./errors.js";
import { closeClient, connectRedis } from "./redis.js";

describe("connectRedis", () => {
  it("honours the logical database number in the URL", async () => {
    const base = new URL(redisUrl());
    base.pathname = "/5";
    const client = connectRedis(base.toString());
    const db0 = new Redis(redisUrl());
    const key = `t:${randomBytes(5).toString("hex")}:db-check`;
    try {
      await client.set(key, "in-db-5", "EX", 60);
      expect(await db0.get(key)).toBeNull();
      await db0.select(5);
      expect(await db0.get(key)).toBe("in-db-5");
      await db0.del(key);
    } finally {
      await closeClient(client);
      db0.disconnect();
    }
  });

  it("rejects a URL of another scheme, or a cluster URL without nodes, with a clear error", () => {
    expect(() => connectRedis("http://127.0.0.1:6379")).toThrow(ConfigError);
    expect(() => connectRedis("redis-cluster://")).toThrow(/host:port pairs/);
  });
});
