import { Cluster, Pipeline, Redis } from "ioredis";
import type { ClusterNode, Command, RedisOptions } from "ioredis";

import { ConfigError } from "./errors.js";

/** A single node or a Redis Cluster: every publisher and consumer works with both. */
export type RedisClient = Redis | Cluster;

export interface ConnectOptions {
  /** Connection name shown by CLIENT LIST. */
  connectionName?: string;
  /**
   * For a connection that issues blocking reads: retry commands forever across reconnects instead of
   * failing them after 20 attempts, since a blocking read has nothing else to do while Redis is away.
   */
  blocking?: boolean;
}

/**
 * Connects from a URL: `redis://[user:pass@]host:port[/db]` (a logical database number in the path is
 * honoured), `rediss://` for TLS, or `redis-cluster://host:port,host:port` for a Redis Cluster.
 */
export function connectRedis(url: string, options: ConnectOptions = {}): RedisClient {
  const common: RedisOptions = {
    connectionName: options.connectionName,
    maxRetriesPerRequest: options.blocking ? null : 20,
    enableAutoPipelining: false,
    lazyConnect: false,
  };
  if (url.startsWith("redis-cluster://")) {
    const nodes = parseClusterNodes(url);
    return new Cluster(nodes, { redisOptions: common, enableOfflineQueue: true });
  }
  if (!/^rediss?:\/\//.test(url)) throw new ConfigError([`REDIS_URL: expected redis://, rediss:// or redis-cluster://`]);
  return new Redis(url, common);
}

function parseClusterNodes(url: string): ClusterNode[] {
  const list = url.slice("redis-cluster://".length).replace(/\/.*$/, "");
  const nodes = list
    .split(",")
    .filter((s) => s.length > 0)
    .map((hostPort) => {
      const [host, port] = hostPort.split(":");
      return { host: host ?? "127.0.0.1", port: Number(port ?? 6379) };
    });
  if (nodes.length === 0 || nodes.some((n) => !Number.isInteger(n.port))) {
    throw new ConfigError([`REDIS_URL: a redis-cluster:// URL lists host:port pairs separated by commas`]);
  }
  return nodes;
}

/** A second connection with the same settings (blocking reads need their own). */
export function duplicateClient(client: RedisClient, options: ConnectOptions = {}): RedisClient {
  if (client instanceof Cluster) {
    return client.duplicate(undefined, {
      redisOptions: { ...client.options.redisOptions, maxRetriesPerRequest: options.blocking ? null : 20 },
    });
  }
  return client.duplicate({
    maxRetriesPerRequest: options.blocking ? null : 20,
    connectionName: options.connectionName ?? client.options.connectionName,
  });
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

/** The reply to one command of `sendCommands`: `[error, null]` or `[null, reply]`, as `pipeline.exec()` gives. */
export type CommandResult = [Error, null] | [null, unknown];

/**
 * Sends `commands` back to back, as one socket write, and resolves to one result per command, in order
 * (the same round trip and results as `redis.pipeline()`). Never rejects: a failure is in its result.
 *
 * Why not `redis.pipeline()` on a hot path: every ioredis `Pipeline`, and everything it references (its
 * commands, their encoded arguments, the replies), survives V8's young-generation collections and is
 * promoted to the old generation, where it dies; a scavenge pauses for as long as it copies. `pnpm
 * bench:gc` (redis case) measures both ways with V8's own GC trace (docs/benchmarks.md, "gc"). On a single
 * node the commands are written while the socket is corked, so they still leave in one write; on a
 * cluster a batch may span nodes, and the `Pipeline` (which routes it by slot) is kept.
 */
export async function sendCommands(client: RedisClient, commands: readonly Command[]): Promise<CommandResult[]> {
  if (commands.length === 0) return [];
  if (isCluster(client)) {
    const pipeline = new Pipeline(client);
    for (const command of commands) pipeline.sendCommand(command);
    try {
      const results = await pipeline.exec();
      if (results === null) throw new Error("pipeline was discarded");
      return commands.map((_, i) => (results[i] ?? [new Error("missing pipeline reply"), null]) as CommandResult);
    } catch (error) {
      const e = error instanceof Error ? error : new Error(String(error));
      return commands.map((): CommandResult => [e, null]);
    }
  }
  // Corked only while connected: otherwise ioredis queues the commands (offline queue) and writes them
  // on reconnect itself.
  const socket = client.status === "ready" ? client.stream : undefined;
  socket?.cork();
  const replies = commands.map((command) =>
    (client.sendCommand(command) as Promise<unknown>).then(
      (reply): CommandResult => [null, reply],
      (error: unknown): CommandResult => [error instanceof Error ? error : new Error(String(error)), null],
    ),
  );
  socket?.uncork();
  return Promise.all(replies);
}

/** Closes a client, waiting for replies already sent; falls back to disconnect if QUIT fails. */
export async function closeClient(client: RedisClient): Promise<void> {
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}
