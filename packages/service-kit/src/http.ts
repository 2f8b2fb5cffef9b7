import { serve } from "@hono/node-server";
import { Hono } from "hono";
import type { Registry } from "prom-client";

/** A readiness check: resolves true when ready; a throw or false means not ready. */
export type ReadinessChecks = Record<string, () => Promise<boolean> | boolean>;

export interface OpsServer {
  port: number;
  close(): Promise<void>;
}

/**
 * `/healthz` (the process is alive), `/readyz` (every check passes; 503 with the failing ones otherwise)
 * and `/metrics` (Prometheus text) on one port.
 */
export async function startOpsServer(options: {
  port: number;
  host?: string;
  registry: Registry;
  readiness: ReadinessChecks;
  /** Per-check timeout, so a hung dependency reads as not ready instead of hanging the probe. */
  checkTimeoutMs?: number;
}): Promise<OpsServer> {
  const app = new Hono();
  const timeoutMs = options.checkTimeoutMs ?? 2000;
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const entries = await Promise.all(
      Object.entries(options.readiness).map(async ([name, check]) => {
        try {
          const ok = await Promise.race([
            Promise.resolve(check()),
            new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref()),
          ]);
          return [name, ok] as const;
        } catch {
          return [name, false] as const;
        }
      }),
    );
    const checks = Object.fromEntries(entries);
    const ready = entries.every(([, ok]) => ok);
    return c.json({ status: ready ? "ready" : "not_ready", checks }, ready ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    c.header("Content-Type", options.registry.contentType);
    return c.body(await options.registry.metrics());
  });
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, port: options.port, hostname: options.host ?? "0.0.0.0" }, (info) => {
      resolve({
        port: info.port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
    server.once("error", reject);
  });
}
