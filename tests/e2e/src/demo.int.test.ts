/**
 * The README's first command, `bash scripts/demo.sh`, run for a bounded time against this machine's
 * Redis (own key prefix) and PostgreSQL (own database) on free ports: every service becomes ready, events
 * move end to end (audit events into the ledger, outbox rows onto their streams and into their
 * consumers), forged events are dead-lettered, and `caracal-streams streams` then shows every group as
 * Redis reports it. Install and build are skipped (CI has done both); everything else is the command.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { createEmptyDatabase, createTestRedis, hasPostgres, hasRedis } from "@caracal/testkit";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../../..", import.meta.url));
/** Every service of the repo: an app with a main.ts that is not the CLI. */
const SERVICES = readdirSync(join(root, "apps")).filter((a) => a !== "cli" && existsSync(join(root, "apps", a, "src", "main.ts")));
const PORT_VARS: Record<string, string> = {
  "audit-ingestor": "INGESTOR_PORT",
  "outbox-dispatcher": "DISPATCHER_PORT",
  "traffic-generator": "TRAFFIC_PORT",
  "revocation-consumer": "REVOCATION_PORT",
  "policy-invalidator": "POLICY_PORT",
  observers: "OBSERVERS_PORT",
};

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe.skipIf(!hasRedis() || !hasPostgres())("the README's first command", () => {
  it("starts every service, each becomes ready, and events move end to end", async () => {
    expect(SERVICES).toEqual(expect.arrayContaining(["audit-ingestor", "outbox-dispatcher", "traffic-generator"]));
    const redis = await createTestRedis("demo");
    const db = await createEmptyDatabase();
    try {
      const ports: Record<string, string> = {};
      for (const service of SERVICES) {
        const variable = PORT_VARS[service];
        expect(variable, `a port variable of scripts/demo.sh for ${service}`).toBeDefined();
        ports[variable as string] = String(await freePort());
      }
      const env = {
        ...process.env,
        ...ports,
        DATABASE_URL: db.url,
        CARACAL_KEY_PREFIX: redis.keyPrefix,
        DEMO_SECONDS: "30",
        DEMO_SKIP_INSTALL: "1",
        DEMO_SKIP_BUILD: "1",
        DEMO_TAMPER: "forge",
        TRAFFIC_TAMPER_EVERY_MS: "3000",
      };
      const demo = await run("bash", ["scripts/demo.sh"], env, 200_000);
      const output = demo.out;
      expect(demo.code, output.slice(-3000)).toBe(0);
      expect(output).not.toMatch(/is not built here/);
      for (const service of SERVICES) expect(output, service).toMatch(new RegExp(`^\\s+${service}\\s+yes\\s`, "m"));
      expect(output, output.slice(-3000)).toMatch(new RegExp(`every service ready \\(${SERVICES.length}\\)`));

      // End to end, from the final summary: audit events reached the ledger, outbox rows were dispatched
      // and none is left behind, and the forged events were dead-lettered rather than stored.
      const figure = (label: string) => Number(new RegExp(`^\\s+${label}\\s+(\\d+)$`, "m").exec(output)?.[1] ?? Number.NaN);
      expect(figure("audit events stored in the ledger")).toBeGreaterThan(500);
      expect(figure("outbox rows dispatched")).toBeGreaterThan(50);
      // rows the traffic generator wrote as upstream's Coordinator does (caracal_outbox), drained too
      expect(figure("caracal_outbox rows published \\(upstream Coordinator's table\\)")).toBeGreaterThan(5);
      expect(figure("dead letters \\(all streams\\)")).toBeGreaterThan(0);
      for (const stream of ["caracal.sessions.revoke", "caracal.agents.lifecycle", "caracal.delegations.invalidate"]) {
        expect(figure(`${stream.replaceAll(".", "\\.")} entries`), stream).toBeGreaterThan(0);
      }

      // The operator CLI reads the groups the services created, as Redis reports them.
      const cli = await run("node", ["apps/cli/dist/main.js", "streams", "--json"], { ...env }, 30_000);
      expect(cli.code, cli.out).toBe(0);
      const streams = JSON.parse(cli.out) as Array<{ stream: string; groups: Array<{ group: string; pending: number; lag: number | null }> }>;
      const groups = new Set(streams.flatMap((s) => s.groups.map((g) => `${s.stream}/${g.group}`)));
      expect(groups).toContain("caracal.audit.events/audit-ingestor");
    } finally {
      await redis.close();
      await db.drop();
    }
  });
});
