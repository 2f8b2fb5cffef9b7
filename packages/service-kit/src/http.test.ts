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
    expect(await notReady.json()).toEqual({ status: "not_ready", checks: { redis: true, postgres: false, hung: false } });
    dbUp = true;
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain("caracal_test_total 3");
  });
});
