import { createHash, timingSafeEqual } from "node:crypto";

import { serve } from "@hono/node-server";
import { Hono } from "hono";
import type { Registry } from "prom-client";

/** What a readiness check says: ready or not, optionally why (shown in the /readyz body). */
export type ReadinessVerdict = boolean | { ready: boolean; detail?: string };

/** A readiness check: resolves true (or `{ready: true}`) when ready; a throw or false means not ready. */
export type ReadinessChecks = Record<string, () => Promise<ReadinessVerdict> | ReadinessVerdict>;

export interface OpsServer {
  port: number;
  close(): Promise<void>;
}

/** Constant-time equality of two secrets of any length (both hashed to 32 bytes first). */
export function sameSecret(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

/**
 * `/healthz` (the process is alive), `/readyz` (every check passes; 503 with each check's verdict
 * otherwise) and `/metrics` (Prometheus text) on one port; `/health` and `/ready` answer the same, as
 * upstream's services name them. With `metricsBearer`, `/metrics` wants `Authorization: Bearer <it>`
 * (compared in constant time). `routes`, an app's own Hono routes, are served beside them.
 */
export async function startOpsServer(options: {
  port: number;
  host?: string;
  registry: Registry;
  readiness: ReadinessChecks;
  /** Per-check timeout, so a hung dependency reads as not ready instead of hanging the probe. */
  checkTimeoutMs?: number;
  metricsBearer?: string | undefined;
  routes?: Hono;
}): Promise<OpsServer> {
  const app = new Hono();
  const timeoutMs = options.checkTimeoutMs ?? 2000;
  const health = (c: { json: (v: unknown) => Response }) => c.json({ status: "ok" });
  app.get("/healthz", health);
  app.get("/health", health);
  const ready = async (c: { json: (v: unknown, status?: 200 | 503) => Response }) => {
    const entries = await Promise.all(
      Object.entries(options.readiness).map(async ([name, check]) => {
        try {
          const verdict = await Promise.race([
            Promise.resolve(check()),
            new Promise<ReadinessVerdict>((resolve) => setTimeout(() => resolve({ ready: false, detail: `no answer in ${timeoutMs} ms` }), timeoutMs).unref()),
          ]);
          return [name, typeof verdict === "boolean" ? { ready: verdict } : verdict] as const;
        } catch (error) {
          return [name, { ready: false, detail: error instanceof Error ? error.message : String(error) }] as const;
        }
      }),
    );
    const checks = Object.fromEntries(entries.map(([name, v]) => [name, v.ready]));
    const details = Object.fromEntries(entries.filter(([, v]) => v.detail !== undefined).map(([name, v]) => [name, v.detail]));
    const allReady = entries.every(([, v]) => v.ready);
    const body: Record<string, unknown> = { status: allReady ? "ready" : "not_ready", checks };
    if (Object.keys(details).length > 0) body.details = details;
    return c.json(body, allReady ? 200 : 503);
  };
  app.get("/readyz", ready);
  app.get("/ready", ready);
  app.get("/metrics", async (c) => {
    const bearer = options.metricsBearer;
    if (bearer !== undefined && bearer !== "") {
      const auth = c.req.header("Authorization") ?? "";
      if (!sameSecret(auth.startsWith("Bearer ") ? auth.slice(7) : "", bearer)) {
        c.header("WWW-Authenticate", 'Bearer realm="metrics"');
        return c.text("unauthorized", 401);
      }
    }
    c.header("Content-Type", options.registry.contentType);
    return c.body(await options.registry.metrics());
  });
  if (options.routes !== undefined) app.route("/", options.routes);
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, port: options.port, hostname: options.host ?? "0.0.0.0" }, (info) => {
      resolve({
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // keep-alive connections would hold close() open until they time out
            (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
          }),
      });
    });
    server.once("error", reject);
  });
}
