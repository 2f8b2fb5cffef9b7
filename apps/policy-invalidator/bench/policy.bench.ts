/**
 * bench:policy: activation commit → the new revision served by three real replicas to waiting long polls
 * (p50/p99/max over the slowest replica, at BENCH_RATE activations/s over BENCH_ZONES zones, carried by
 * the real outbox dispatcher); build time of one bundle of 200 modules of 5 KB; 304 answers per second of
 * the bundle route beside a bare hono route answering 304, in the same process. BENCH_SHORT=1: a smoke run.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

import { migrateDatabase } from "@caracal/db";
import { activatePolicySetVersion, manifestSha256 } from "@caracal/outbox";
import { createScratchDatabase, plainMetric, printBenchTable, ratioMetric, reportBench } from "@caracal/testkit/bench-report";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import pg from "pg";

import { buildBundle } from "../src/bundle.js";
import { bundleRoutes } from "../src/routes.js";
import { BundleStore } from "../src/store.js";

const SHORT = process.env.BENCH_SHORT === "1";
const ZONES = Number(process.env.BENCH_ZONES ?? (SHORT ? 10 : 100));
const RATE = Number(process.env.BENCH_RATE ?? 20);
const SECONDS = Number(process.env.BENCH_SECONDS ?? (SHORT ? 3 : 30));
const KEY = "c3".repeat(32);
const adminUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `bench:policy:${process.pid}:`;
const main = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));

function spawnService(path: string, line: string, env: Record<string, string>): { child: ChildProcess; port: Promise<number> } {
  const child = spawn(process.execPath, [path], { env: { PATH: process.env.PATH ?? "", STREAMS_HMAC_KEY: KEY, PORT: "0", LOG_LEVEL: "info", ...env }, stdio: ["ignore", "pipe", "inherit"] });
  child.stdout?.resume();
  let out = "";
  const port = new Promise<number>((resolve, reject) => {
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const m = new RegExp(`"port":(\\d+)[^\\n]*${line}`).exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", () => reject(new Error(`${path} exited:\n${out}`)));
  });
  return { child, port };
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

async function hammer(url: string, etag: string, seconds: number, concurrency: number): Promise<number> {
  let count = 0;
  const until = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < until) {
        const res = await fetch(url, { headers: { "If-None-Match": etag } });
        await res.arrayBuffer();
        if (res.status === 304) count++;
      }
    }),
  );
  return count / seconds;
}

const scratch = await createScratchDatabase(adminUrl, "policy");
const children: ChildProcess[] = [];
try {
  await migrateDatabase(scratch.url);
  const pool = new pg.Pool({ connectionString: scratch.url, max: 8 });
  const perZone = Math.ceil((RATE * SECONDS) / ZONES) + 1;
  for (let z = 0; z < ZONES; z++) {
    const zone = `zone-${z}`;
    await pool.query("INSERT INTO zones (id, name, slug) VALUES ($1, $1, $1)", [zone]);
    await pool.query("INSERT INTO policy_sets (id, zone_id, name, created_by) VALUES ($1, $2, 'set', 'bench')", [`${zone}-set`, zone]);
    await pool.query("INSERT INTO policy_set_bindings (zone_id, policy_set_id) VALUES ($1, $2)", [zone, `${zone}-set`]);
    await pool.query("INSERT INTO policies (id, zone_id, name, created_by) VALUES ($1, $2, $1, 'bench')", [`${zone}-p`, zone]);
    for (let v = 0; v < perZone; v++) {
      const pv = `${zone}-pv${v}`;
      await pool.query("INSERT INTO policy_versions (id, policy_id, version, content, content_sha256, schema_version, created_by) VALUES ($1, $2, $3, $4, 'x', 'v1', 'bench')", [pv, `${zone}-p`, v + 1, `package caracal.authz\n\nv${v} := true\n`]);
      const manifest = [{ policy_version_id: pv }];
      await pool.query("INSERT INTO policy_set_versions (id, policy_set_id, version, manifest_json, manifest_sha256, schema_version, created_by) VALUES ($1, $2, $3, $4::jsonb, $5, 'v1', 'bench')", [`${zone}-v${v}`, `${zone}-set`, v + 1, JSON.stringify(manifest), manifestSha256(manifest)]);
    }
    await pool.query("UPDATE policy_set_bindings SET active_version_id = $1 WHERE zone_id = $2", [`${zone}-v0`, zone]);
  }
  const env = { DATABASE_URL: scratch.url, REDIS_URL: redisUrl, CARACAL_KEY_PREFIX: prefix };
  const replicas = Array.from({ length: 3 }, () => spawnService(main("../dist/main.js"), "policy invalidator running", env));
  const dispatcher = spawnService(main("../../outbox-dispatcher/dist/main.js"), "outbox dispatcher running", { ...env, CARACAL_OUTBOX_POLL_MS: "250" });
  children.push(...replicas.map((r) => r.child), dispatcher.child);
  const ports = await Promise.all(replicas.map((r) => r.port));
  await dispatcher.port;
  for (const p of ports) {
    for (;;) {
      if ((await fetch(`http://127.0.0.1:${p}/readyz`)).status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  // long polls: every replica × every zone, re-armed after each answer; records when each revision arrived
  const seen = new Map<string, number[]>(); // version id → arrival times (one per replica)
  let polling = true;
  const polls = ports.flatMap((port) =>
    Array.from({ length: ZONES }, async (_, z) => {
      let etag = "";
      while (polling) {
        const res = await fetch(`http://127.0.0.1:${port}/bundles/zone-${z}.tar.gz`, { headers: etag === "" ? {} : { "If-None-Match": etag, Prefer: "wait=10" } });
        await res.arrayBuffer();
        if (res.status !== 200) continue;
        etag = res.headers.get("etag") ?? "";
        const version = etag.replace(/^"/, "").split(".")[0]!;
        const list = seen.get(version) ?? [];
        list.push(Date.now());
        seen.set(version, list);
      }
    }),
  );
  await new Promise((r) => setTimeout(r, 1000));

  const committed = new Map<string, number>();
  const next = new Array<number>(ZONES).fill(1);
  const total = RATE * SECONDS;
  const started = Date.now();
  for (let i = 0; i < total; i++) {
    const due = started + (i * 1000) / RATE;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
    const z = i % ZONES;
    const version = `zone-${z}-v${next[z]!++}`;
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await activatePolicySetVersion(client, `zone-${z}`, `zone-${z}-set`, version);
      await client.query("COMMIT");
      committed.set(version, Date.now());
    } finally {
      client.release();
    }
  }
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && [...committed.keys()].some((v) => (seen.get(v)?.length ?? 0) < 3)) await new Promise((r) => setTimeout(r, 100));
  const latencies = [...committed.entries()].flatMap(([v, at]) => {
    const arrivals = seen.get(v) ?? [];
    return arrivals.length >= 3 ? [Math.max(...arrivals) - at] : [];
  });
  const missed = committed.size - latencies.length;
  latencies.sort((a, b) => a - b);
  polling = false;

  // one bundle of 200 modules of 5 KB, built in process
  const modules = Array.from({ length: 200 }, (_, i) => ({ id: `pv-${i}`, content: `package caracal.authz\n\n# ${"x".repeat(5 * 1024 - 40)}\nm${i} := true\n` }));
  const builds: number[] = [];
  for (let i = 0; i < (SHORT ? 3 : 20); i++) {
    const t = performance.now();
    await buildBundle({ zoneId: "big", policySetId: "s", policySetVersionId: "v", manifestSha256: "x", modules });
    builds.push(performance.now() - t);
  }
  builds.sort((a, b) => a - b);

  // 304s per second: the bundle route and a bare hono route, same process, same client
  const store = new BundleStore();
  const bundle = await buildBundle({ zoneId: "z", policySetId: "s", policySetVersionId: "v", manifestSha256: "x", modules: modules.slice(0, 2) });
  store.put(bundle);
  const bare = new Hono().get("/bare", (c) => c.body(null, 304, { ETag: bundle.etag }));
  const app = new Hono().route("/", bundleRoutes({ store, maxWaitMs: 0 })).route("/", bare);
  const server = await new Promise<{ port: number; close: () => void }>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => resolve({ port: info.port, close: () => s.close() }));
  });
  const hammerSeconds = SHORT ? 1 : 5;
  const bareRate = await hammer(`http://127.0.0.1:${server.port}/bare`, bundle.etag, hammerSeconds, 32);
  const bundleRate = await hammer(`http://127.0.0.1:${server.port}/bundles/z.tar.gz`, bundle.etag, hammerSeconds, 32);
  server.close();

  const metrics = [
    plainMetric("activation_to_served_p50_ms", quantile(latencies, 0.5), "ms"),
    plainMetric("activation_to_served_p99_ms", quantile(latencies, 0.99), "ms", "<= 150"),
    plainMetric("activation_to_served_max_ms", latencies.at(-1) ?? NaN, "ms"),
    plainMetric("activations_not_served_in_15s", missed, "count", "0"),
    plainMetric("bundle_build_200x5KB_median_ms", quantile(builds, 0.5), "ms"),
    ratioMetric("not_modified_per_s_vs_bare_hono", bundleRate, bareRate, "responses/s"),
  ];
  if (SHORT) printBenchTable(metrics);
  else reportBench("policy", metrics, { zones: ZONES, rate: RATE, seconds: SECONDS, replicas: 3 });
  await Promise.race([Promise.all(polls), new Promise((r) => setTimeout(r, 11_000))]);
  await pool.end();
} finally {
  for (const c of children) c.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 500));
  await scratch.drop();
}
process.exit(0);
