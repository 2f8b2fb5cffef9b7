/**
 * A local 3-master Redis Cluster for tests: `redis-server` child processes on spare ports (a free-port
 * search in 17000-17999, or from REDIS_CLUSTER_PORT_BASE), joined with `redis-cli --cluster create`,
 * ready once every node reports `cluster_state:ok`. `stop()` kills the nodes and removes their files.
 * Needs `redis-server` and `redis-cli` on the PATH; `redisClusterAvailable()` says whether they are.
 */
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

import { Cluster, Redis } from "ioredis";

const execFileAsync = promisify(execFile);

export interface TestRedisCluster {
  readonly nodes: ReadonlyArray<{ host: string; port: number }>;
  /** `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` (the form streams-core `connectRedis` reads). */
  readonly url: string;
  /** A new cluster client; closed by `stop`. */
  connect(): Cluster;
  /** Closes the clients, kills the nodes, deletes their directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRedisClusterOptions {
  /** First port to try; the cluster bus uses port + 10000. Default REDIS_CLUSTER_PORT_BASE or a random spot in 17000-17999. */
  portBase?: number;
  /** Time to wait for `cluster_state:ok`. Default 20,000 ms. */
  readyTimeoutMs?: number;
}

/** True when `redis-server` and `redis-cli` can be run. */
export async function redisClusterAvailable(): Promise<boolean> {
  try {
    await execFileAsync("redis-server", ["--version"]);
    await execFileAsync("redis-cli", ["--version"]);
    return true;
  } catch {
    return false;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Three ports whose cluster bus ports (port + 10000) are free too. */
async function findPorts(base: number): Promise<number[]> {
  const ports: number[] = [];
  for (let port = base; ports.length < 3; port++) {
    if (port > 18_999) throw new Error("no free ports for a Redis Cluster between the base and 18999");
    if ((await portFree(port)) && (await portFree(port + 10_000))) ports.push(port);
  }
  return ports;
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`Redis Cluster: timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function nodeInfo(port: number, command: string[]): Promise<string> {
  const client = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  try {
    await client.connect();
    return String(await client.call(command[0] as string, ...command.slice(1)));
  } finally {
    client.disconnect();
  }
}

export async function startRedisCluster(options: StartRedisClusterOptions = {}): Promise<TestRedisCluster> {
  const envBase = process.env.REDIS_CLUSTER_PORT_BASE;
  const base = options.portBase ?? (envBase !== undefined && envBase !== "" ? Number(envBase) : 17_000 + Math.floor(Math.random() * 900));
  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
  const dir = mkdtempSync(join(tmpdir(), "caracal-redis-cluster-"));
  const children: ChildProcess[] = [];
  const clients: Cluster[] = [];
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
            child.once("exit", () => {
              clearTimeout(timer);
              resolve();
            });
            child.kill("SIGTERM");
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const ports = await findPorts(base);
    for (const port of ports) {
      const child = spawn(
        "redis-server",
        [
          "--port", String(port),
          "--bind", "127.0.0.1",
          "--cluster-enabled", "yes",
          "--cluster-config-file", `nodes-${port}.conf`,
          "--cluster-node-timeout", "5000",
          "--dir", dir,
          "--save", "",
          "--appendonly", "no",
          "--daemonize", "no",
        ],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      children.push(child);
    }
    for (const port of ports) await waitUntil(async () => (await nodeInfo(port, ["PING"])) === "PONG", 10_000, `node ${port}`);
    await execFileAsync(
      "redis-cli",
      ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"],
      { timeout: readyTimeoutMs },
    );
    for (const port of ports) {
      await waitUntil(async () => (await nodeInfo(port, ["CLUSTER", "INFO"])).includes("cluster_state:ok"), readyTimeoutMs, `cluster_state:ok on ${port}`);
    }
    const nodes = ports.map((port) => ({ host: "127.0.0.1", port }));
    return {
      nodes,
      url: `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`,
      connect() {
        const c = new Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 3 } });
        clients.push(c);
        return c;
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
