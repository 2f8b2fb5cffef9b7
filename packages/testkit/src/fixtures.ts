/**
 * Per-test fixtures: a real Redis (own key prefix) and a real PostgreSQL database (own database).
 * Use inside vitest tests only (reads what the global setup provided).
 */
import { randomBytes } from "node:crypto";

import { Redis } from "ioredis";
import { inject } from "vitest";

import { createTestDatabase } from "./postgres.js";
import type { TestDatabase } from "./postgres.js";

export function redisUrl(): string {
  return inject("redisUrl");
}

export function adminDatabaseUrl(): string {
  return inject("databaseUrl");
}

/** True when the global setup found the service (always true under REQUIRE_SERVICES=1, or the run failed). */
export function hasRedis(): boolean {
  return !inject("missingServices").some((m) => m.startsWith("Redis"));
}
export function hasPostgres(): boolean {
  return !inject("missingServices").some((m) => m.startsWith("PostgreSQL"));
}

/** A key prefix unique to one test, e.g. `t:9f2c1a:`; every stream key of the test starts with it. */
export function uniquePrefix(label = "t"): string {
  return `${label}:${randomBytes(5).toString("hex")}:`;
}

export interface TestRedis {
  url: string;
  client: Redis;
  keyPrefix: string;
  /** Another connection to the same server (e.g. for a second consumer). Closed by `close`. */
  connect(): Redis;
  /** Deletes every key under the prefix and closes every connection. */
  close(): Promise<void>;
}

export async function createTestRedis(label = "t"): Promise<TestRedis> {
  const url = redisUrl();
  const clients: Redis[] = [];
  const connect = () => {
    const c = new Redis(url, { maxRetriesPerRequest: 3 });
    clients.push(c);
    return c;
  };
  const client = connect();
  const keyPrefix = uniquePrefix(label);
  return {
    url,
    client,
    keyPrefix,
    connect,
    async close() {
      try {
        let cursor = "0";
        do {
          const [next, keys] = await client.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000);
          cursor = next;
          if (keys.length > 0) await client.del(...keys);
        } while (cursor !== "0");
      } catch {
        // the test may have stopped Redis; nothing to clean then
      }
      await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}

/** A migrated database of the test's own; call `drop()` in afterEach/afterAll. */
export async function createMigratedDatabase(): Promise<TestDatabase> {
  return createTestDatabase(adminDatabaseUrl(), inject("templateDatabase"));
}

/** An empty database (no migrations), e.g. to build an upstream schema and migrate over it. */
export async function createEmptyDatabase(): Promise<TestDatabase> {
  return createTestDatabase(adminDatabaseUrl(), inject("templateDatabase"), { migrated: false });
}
