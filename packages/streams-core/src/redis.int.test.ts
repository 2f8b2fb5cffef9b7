import { randomBytes } from "node:crypto";

import { redisUrl } from "@caracal/testkit";
import { Command, Redis } from "ioredis";
import { describe, expect, it } from "vitest";

import { ConfigError } from "./errors.js";
import { closeClient, connectRedis, sendCommands } from "./redis.js";

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

describe("sendCommands", () => {
  it("gives one result per command, in order, with a failed command's error in its own place", async () => {
    const client = new Redis(redisUrl());
    const prefix = `t:${randomBytes(5).toString("hex")}:`;
    try {
      await client.set(`${prefix}text`, "a string, not a stream", "EX", 60);
      const results = await sendCommands(client, [
        new Command("xadd", [`${prefix}s`, "*", "n", "1"]),
        new Command("xadd", [`${prefix}text`, "*", "n", "2"]),
        new Command("xadd", [`${prefix}s`, "*", "n", "3"]),
        new Command("xlen", [`${prefix}s`]),
      ]);
      expect(results.map(([error]) => error?.message.split(" ")[0] ?? null)).toEqual([null, "WRONGTYPE", null, null]);
      expect(results[3]).toEqual([null, 2]);
      expect(String(results[0]?.[1])).toMatch(/^\d+-\d+$/);
    } finally {
      await client.del(`${prefix}s`, `${prefix}text`);
      client.disconnect();
    }
  });

  it("sends commands given before the connection is ready once it is, in order", async () => {
    const client = new Redis(redisUrl(), { lazyConnect: true });
    const key = `t:${randomBytes(5).toString("hex")}:list`;
    try {
      expect(client.status).toBe("wait");
      const results = await sendCommands(client, ["a", "b", "c"].map((v) => new Command("rpush", [key, v])));
      expect(results).toEqual([[null, 1], [null, 2], [null, 3]]);
      expect(await client.lrange(key, 0, -1)).toEqual(["a", "b", "c"]);
    } finally {
      await client.del(key);
      client.disconnect();
    }
  });

  it("reports a closed connection in every result instead of rejecting", async () => {
    const client = new Redis(redisUrl(), { maxRetriesPerRequest: 0, enableOfflineQueue: false, lazyConnect: true });
    const results = await sendCommands(client, [new Command("ping", []), new Command("ping", [])]);
    expect(results.every(([error]) => error instanceof Error)).toBe(true);
    client.disconnect();
  });
});
