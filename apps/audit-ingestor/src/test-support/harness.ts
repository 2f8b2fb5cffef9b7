/** Shared helpers of the ingestor's integration tests: config, publishing, polling. */
import type { Fields } from "@caracal/streams-core";
import { StreamPublisher, Topics, signaturePolicy, streamKey } from "@caracal/streams-core";
import type { Redis } from "ioredis";
import { pino } from "pino";

import type { AuditConfig } from "../config.js";
import { loadConfig } from "../config.js";
import { TEST_AUDIT_KEY, TEST_STREAMS_KEY_HEX } from "./events.js";

export const silentLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export function testEnv(o: { databaseUrl: string; redisUrl: string; keyPrefix: string; consumer?: string; extra?: Record<string, string> }): Record<string, string> {
  return {
    DATABASE_URL: o.databaseUrl,
    REDIS_URL: o.redisUrl,
    AUDIT_HMAC_KEY: TEST_AUDIT_KEY.toString("hex"),
    STREAMS_HMAC_KEY: TEST_STREAMS_KEY_HEX,
    CARACAL_MODE: "stable",
    CARACAL_KEY_PREFIX: o.keyPrefix,
    HOSTNAME: o.consumer ?? "audit-test-0",
    AUDIT_CLAIM_IDLE_SECS: "1",
    AUDIT_MAX_DELIVERIES: "3",
    AUDIT_TAMPER_SWEEP_INTERVAL_MS: "3600000",
    CARACAL_SHUTDOWN_GRACE_MS: "5000",
    PORT: "0",
    ...o.extra,
  };
}

export function testConfig(o: Parameters<typeof testEnv>[0]): AuditConfig {
  return loadConfig(testEnv(o));
}

export const AUDIT_STREAM = Topics.auditEvents.stream;
export const AUDIT_DLQ_STREAM = Topics.auditEvents.deadLetterStream as string;

/** A publisher that signs `_sig` with the test streams key. */
export function testPublisher(redis: Redis, keyPrefix: string): StreamPublisher {
  return new StreamPublisher({ redis, keyPrefix, signing: signaturePolicy({ mode: "stable", keyHex: TEST_STREAMS_KEY_HEX }) });
}

/** XADD without `_sig` (an upstream `{id,data,sig}` frame), or with fields exactly as given. */
export async function xaddRaw(redis: Redis, keyPrefix: string, fields: Fields): Promise<string> {
  return (await redis.xadd(streamKey(AUDIT_STREAM, keyPrefix), "*", ...Object.entries(fields).flat())) as string;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function deadLetters(redis: Redis, keyPrefix: string): Promise<Fields[]> {
  const entries = (await redis.xrange(streamKey(AUDIT_DLQ_STREAM, keyPrefix), "-", "+")) as Array<[string, string[]]>;
  return entries.map(([, list]) => {
    const f: Fields = {};
    for (let i = 0; i + 1 < list.length; i += 2) f[list[i]!] = list[i + 1]!;
    return f;
  });
}

export async function pendingCount(redis: Redis, keyPrefix: string): Promise<number> {
  const s = (await redis.xpending(streamKey(AUDIT_STREAM, keyPrefix), Topics.auditEvents.groups.auditIngestor)) as [number, ...unknown[]];
  return Number(s[0]);
}

