import { Registry, Counter } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";

import { startOpsServer } from "./http.js";
import type { OpsServer } from "./http.js";

let server: OpsServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe("ops server", () => {
  it("serves /healthz, /readyz with every check, and /metrics", async () => {
    const registry = new Registry();
    new Counter({ name: "caracal_test_total", help: "t", registers: [registry] }).inc(3);
    let dbUp = false;
    server = await startOpsServer({
      port: 0,
      host: "127.0.0.1",
      registry,
      readiness: { redis: () => true, postgres: () => dbUp, hung: () => new Promise<boolean>(() => undefined) },
      checkTimeoutMs: 100,
    });
    const base = `http://127.0.0.1:${server.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const notReady = await fetch(`${base}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ status: "not_ready", checks: { redis: true, postgres: false, hung: false }, details: { hung: "no answer in 100 ms" } });
    dbUp = true;
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain("caracal_test_total 3");
  });

  it("answers /health and /ready as /healthz and /readyz, guards /metrics with METRICS_BEARER, and serves app routes", async () => {
    const registry = new Registry();
    new Counter({ name: "caracal_test_total", help: "t", registers: [registry] }).inc();
    const { Hono } = await import("hono");
    const routes = new Hono();
    routes.get("/v1/ping", (c) => c.json({ pong: true }));
    server = await startOpsServer({ port: 0, host: "127.0.0.1", registry, readiness: { ok: () => ({ ready: true, detail: "fine" }) }, metricsBearer: "s3cret", routes });
    const base = `http://127.0.0.1:${server.port}`;
    expect((await fetch(`${base}/health`)).status).toBe(200);
    const ready = await fetch(`${base}/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready", checks: { ok: true }, details: { ok: "fine" } });
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: { Authorization: "Bearer wrong" } })).status).toBe(401);
    const ok = await fetch(`${base}/metrics`, { headers: { Authorization: "Bearer s3cret" } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toContain("caracal_test_total 1");
    expect(await (await fetch(`${base}/v1/ping`)).json()).toEqual({ pong: true });
  });
});
