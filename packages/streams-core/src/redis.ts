import { Cluster, Redis } from "ioredis";
import type { ClusterNode, RedisOptions } from "ioredis";

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

/** Closes a client, waiting for replies already sent; falls back to disconnect if QUIT fails. */
export async function closeClient(client: RedisClient): Promise<void> {
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}
