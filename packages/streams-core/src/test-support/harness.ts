/**
 * Helpers for the consumer conformance suite and the cluster test: signing policies, publishing revocation
 * entries, running a consumer until a condition holds, reading dead letters and the PEL.
 */
import { randomBytes } from "node:crypto";

import type { Fields } from "../codec.js";
import { decodeFieldList } from "../codec.js";
import { StreamConsumer } from "../consumer/stream-consumer.js";
import type { ConsumerOptions } from "../consumer/types.js";
import { StreamPublisher } from "../publisher.js";
import type { RedisClient } from "../redis.js";
import { Topics, streamKey } from "../registry.js";
import { StreamSigner } from "../signing.js";
import type { SignaturePolicy } from "../signing.js";

export const topic = Topics.sessionsRevoke;
export const group = Topics.sessionsRevoke.groups.sts;
/** The revocation topic's dead-letter stream (logical name). */
export const dlqStream: string = requireDefined(Topics.sessionsRevoke.deadLetterStream);

function requireDefined(value: string | undefined): string {
  if (value === undefined) throw new Error("the revocation topic has a dead-letter stream in the registry");
  return value;
}

export function newKeyHex(): string {
  return randomBytes(32).toString("hex");
}

export function stablePolicy(keyHex = newKeyHex()): SignaturePolicy {
  return { mode: "stable", signer: StreamSigner.fromHex(keyHex) };
}

export function devPolicy(keyHex = newKeyHex()): SignaturePolicy {
  return { mode: "dev", signer: StreamSigner.fromHex(keyHex) };
}

/** A valid revocation entry, numbered so tests can check order. */
export function revocation(n: number, extra: Fields = {}): Fields {
  return { zone_id: "zone-1", reason: "logout", session_id: `sess-${n}`, n: String(n), ...extra };
}

export async function publishRevocations(
  redis: RedisClient,
  policy: SignaturePolicy,
  keyPrefix: string,
  entries: readonly Fields[],
): Promise<string[]> {
  const publisher = new StreamPublisher({ redis, signing: policy, keyPrefix });
  const outcomes = await publisher.publishBatch(entries.map((fields) => ({ stream: topic.stream, fields })));
  return outcomes.map((o) => {
    if (!o.ok) throw o.error;
    return o.id;
  });
}

/** XADD without signing (for unsigned or hand-signed entries). */
export async function rawAdd(redis: RedisClient, keyPrefix: string, fields: Fields): Promise<string> {
  const args: string[] = [];
  for (const k in fields) args.push(k, fields[k] as string);
  return (await redis.xadd(streamKey(topic.stream, keyPrefix), "*", ...args)) as string;
}

export interface Running<T> {
  consumer: StreamConsumer<T>;
  controller: AbortController;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts a consumer on the revocation topic with test-friendly timings (overridable). */
export function startConsumer<T>(options: Partial<ConsumerOptions<T>> & Pick<ConsumerOptions<T>, "redis" | "signing" | "keyPrefix">): Running<T> {
  const consumer = new StreamConsumer<T>({
    topic,
    group,
    consumer: "c1",
    startId: "0",
    blockMs: 100,
    claimIdleMs: 60_000,
    statsIntervalMs: 60_000,
    graceMs: 5_000,
    ...options,
  } as ConsumerOptions<T>);
  const controller = new AbortController();
  const done = consumer.run(controller.signal);
  return {
    consumer,
    controller,
    done,
    async stop() {
      controller.abort();
      await done;
    },
  };
}

export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface StreamEntry {
  id: string;
  fields: Fields;
}

export async function readStream(redis: RedisClient, key: string): Promise<StreamEntry[]> {
  const rows = (await redis.xrange(key, "-", "+")) as Array<[string, string[]]>;
  return rows.map(([id, list]) => ({ id, fields: decodeFieldList(list) ?? {} }));
}

export function deadLetterKey(keyPrefix: string): string {
  return streamKey(dlqStream, keyPrefix);
}

/** Pending entries of the group: `[id, consumer, idleMs, deliveries]`. */
export async function pendingEntries(redis: RedisClient, keyPrefix: string): Promise<Array<[string, string, number, number]>> {
  return (await redis.xpending(streamKey(topic.stream, keyPrefix), group, "-", "+", 1000)) as Array<[string, string, number, number]>;
}

export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
