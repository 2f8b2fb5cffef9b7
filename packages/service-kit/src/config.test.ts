import { ConfigError } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";
import { z } from "zod";

import { boolVar, databaseUrlVar, intVar, loadEnv, modeVar, redisUrlVar } from "./config.js";

const schema = z.object({
  REDIS_URL: redisUrlVar(),
  DATABASE_URL: databaseUrlVar(),
  CARACAL_MODE: modeVar(),
  BATCH: intVar(32, { min: 1, max: 1000 }),
  FLAG: boolVar(false),
});

describe("loadEnv", () => {
  it("applies defaults and coerces", () => {
    const env = loadEnv(schema, { REDIS_URL: "redis://h:6379/2", DATABASE_URL: "postgres://u@h/db", BATCH: "64", FLAG: "true" });
    expect(env).toEqual({ REDIS_URL: "redis://h:6379/2", DATABASE_URL: "postgres://u@h/db", CARACAL_MODE: "stable", BATCH: 64, FLAG: true });
  });
  it("accepts a Redis Cluster URL with several nodes, and refuses other schemes", () => {
    const cluster = "redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002";
    expect(loadEnv(schema, { REDIS_URL: cluster, DATABASE_URL: "postgres://h/d" }).REDIS_URL).toBe(cluster);
    expect(() => loadEnv(schema, { REDIS_URL: "http://h:7000,h:7001", DATABASE_URL: "postgres://h/d" })).toThrow(ConfigError);
    expect(() => loadEnv(schema, { REDIS_URL: "redis-cluster://", DATABASE_URL: "postgres://h/d" })).toThrow(ConfigError);
  });
  it("treats empty strings as unset", () => {
    expect(loadEnv(schema, { REDIS_URL: "redis://h", DATABASE_URL: "postgres://h/d", BATCH: "" }).BATCH).toBe(32);
  });
  it("names every bad variable at once and never echoes a value", () => {
    try {
      loadEnv(schema, { REDIS_URL: "http://secret-host", CARACAL_MODE: "prod", BATCH: "0", FLAG: "maybe" });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const problems = (e as ConfigError).problems.join("\n");
      for (const name of ["REDIS_URL", "DATABASE_URL", "CARACAL_MODE", "BATCH", "FLAG"]) expect(problems).toContain(name);
      expect(problems).toContain("DATABASE_URL: required");
      expect(problems).not.toContain("secret-host");
    }
  });
});


describe("ConfigProblems and the shared Caracal settings", () => {
  it("collects ConfigErrors from every check, once each, and lets other errors through", async () => {
    const { ConfigProblems, caracalModeOf, streamSigningFromEnv } = await import("./config.js");
    const problems = new ConfigProblems();
    const env = { CARACAL_MODE: "rc", STREAMS_HMAC_KEY: "abc" };
    const mode = caracalModeOf(env);
    expect(mode).toBe("rc");
    expect(problems.check(() => streamSigningFromEnv(env, mode))).toBeUndefined();
    problems.check(() => streamSigningFromEnv(env, mode));
    problems.add("PORT: must be a number");
    expect(problems.empty).toBe(false);
    expect(problems.error().problems).toEqual(["STREAMS_HMAC_KEY: hex key has an odd number of characters", "PORT: must be a number"]);
    expect(() => problems.check(() => { throw new TypeError("bug"); })).toThrow(TypeError);
  });
  it("reads an unset or invalid mode as stable, and dev without a key as unsigned", async () => {
    const { caracalModeOf, streamSigningFromEnv } = await import("./config.js");
    expect(caracalModeOf({})).toBe("stable");
    expect(caracalModeOf({ CARACAL_MODE: "prod" })).toBe("stable");
    expect(streamSigningFromEnv({}, "dev").signer).toBeUndefined();
    expect(() => streamSigningFromEnv({}, "stable")).toThrow(/STREAMS_HMAC_KEY: required/);
  });
});
