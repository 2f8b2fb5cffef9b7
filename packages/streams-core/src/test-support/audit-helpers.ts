/**
 * Helpers for the audit publisher tests: audit events, a spare redis-server of the test's own that can be
 * stopped and restarted on the same port, and a port nothing listens on.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import net from "node:net";

import { Redis } from "ioredis";

import type { AuditEvent } from "../schemas.js";

export function auditEvent(zone: string, overrides: Partial<AuditEvent> = {}): AuditEvent {
  return {
    id: randomUUID(),
    zone_id: zone,
    event_type: "token_exchange",
    request_id: `req-${randomUUID()}`,
    decision: "allow",
    policy_set_id: "ps-1",
    policy_set_version_id: "psv-1",
    manifest_sha: "sha256:00",
    evaluation_status: "complete",
    determining_policies_json: [{ id: "baseline" }],
    diagnostics_json: [],
    metadata_json: { client: "test" },
    occurred_at: new Date().toISOString(),
    ...overrides,
  };
}

/** A TCP port that was free a moment ago (nothing listens on it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface SpareRedis {
  port: number;
  url: string;
  start(): Promise<void>;
  /** SIGKILLs the server: connections drop, nothing is saved. */
  kill(): Promise<void>;
}

/** A redis-server process of the test's own on a spare port (no persistence). Call `kill` in cleanup. */
export async function spareRedis(fixedPort?: number): Promise<SpareRedis> {
  const port = fixedPort ?? (await freePort());
  let child: ChildProcess | undefined;
  const spare: SpareRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: "ignore",
      });
      const probe = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on("error", () => undefined);
      try {
        for (let i = 0; i < 100; i++) {
          try {
            if (probe.status !== "ready") await probe.connect();
            if ((await probe.ping()) === "PONG") return;
          } catch {
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        throw new Error(`redis-server on port ${port} did not start`);
      } finally {
        probe.disconnect();
      }
    },
    async kill() {
      const c = child;
      child = undefined;
      if (c === undefined || c.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once("exit", () => resolve());
        c.kill("SIGKILL");
      });
    },
  };
  await spare.start();
  return spare;
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
