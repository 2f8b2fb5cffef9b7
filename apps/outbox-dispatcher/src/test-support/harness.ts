/** Test helpers: an in-process dispatcher on a test database and key prefix, a private redis-server, waits. */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import net from "node:net";

import type { Fields, RedisClient } from "@caracal/streams-core";
import { StreamPublisher, StreamSigner, closeClient, connectRedis, decodeFieldList, streamKey } from "@caracal/streams-core";
import type { Redis } from "ioredis";
import type pg from "pg";
import { pino } from "pino";

import type { DispatcherOptions } from "../dispatcher.js";
import { OutboxDispatcher } from "../dispatcher.js";
import { createMetrics } from "../metrics.js";

export const TEST_KEY_HEX = "a1".repeat(32);
export const signer = StreamSigner.fromHex(TEST_KEY_HEX);
export const silentLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export interface RunningDispatcher {
  dispatcher: OutboxDispatcher;
  redis: RedisClient;
  metrics: ReturnType<typeof createMetrics>;
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Starts a dispatcher in this process; `stop()` aborts it, waits for its drain and closes its Redis client. */
export function startDispatcher(
  pool: pg.Pool,
  redisUrl: string,
  keyPrefix: string,
  overrides: Partial<DispatcherOptions> = {},
): RunningDispatcher {
  const redis = connectRedis(redisUrl, { connectionName: "outbox-test" });
  redis.on("error", () => undefined);
  const publisher = new StreamPublisher({ redis, signing: { mode: "stable", signer }, keyPrefix, maxLenFor: () => 100_000 });
  const metrics = createMetrics(pool);
  const dispatcher = new OutboxDispatcher({
    pool,
    publisher,
    redis,
    metrics,
    logger: silentLogger,
    owner: `test-${Math.random().toString(36).slice(2, 8)}`,
    pollMs: 50,
    ...overrides,
  });
  const controller = new AbortController();
  const done = dispatcher.run(controller.signal);
  let stopped: Promise<void> | undefined;
  return {
    dispatcher,
    redis,
    metrics,
    done,
    stop() {
      stopped ??= (async () => {
        controller.abort();
        await done.catch(() => undefined);
        await closeClient(redis);
      })();
      return stopped;
    },
  };
}

export interface StreamEntry {
  id: string;
  fields: Fields;
}

export async function readStream(client: Redis, stream: string, keyPrefix: string): Promise<StreamEntry[]> {
  const raw = (await client.xrange(streamKey(stream, keyPrefix), "-", "+")) as [string, string[]][];
  return raw.map(([id, list]) => ({ id, fields: decodeFieldList(list) ?? {} }));
}

/** Polls `probe` until it returns something other than undefined, null or false. */
export async function waitFor<T>(probe: () => Promise<T | undefined | null | false>, timeoutMs = 15_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** A private redis-server child process (no persistence), so a test can stop and restart Redis. */
export class OwnRedis {
  private child: ChildProcess | undefined;
  constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.child = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    const { reachable } = await import("@caracal/testkit");
    await waitFor(async () => reachable(this.url, this.port, 200), 10_000, "redis-server to listen");
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }
}
