/**
 * Child of `pnpm bench:revocation` (its own process, so its peak RSS is the cache's): seeds a
 * RevocationCache from the table, then measures in-process `check` and the HTTP check beside a bare hono
 * route in the same run. Prints one JSON line. Environment: DATABASE_URL, REDIS_URL, BENCH_PREFIX,
 * BENCH_CHECK_SECONDS, BENCH_HTTP_SECONDS.
 */
import { once } from "node:events";
import { Agent, request } from "node:http";

import { RevocationCache, revocationRoutes } from "@caracal/revocation-cache";
import { signaturePolicy } from "@caracal/streams-core";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { Redis } from "ioredis";
import pg from "pg";
import { pino } from "pino";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const controller = new AbortController();
const cache = new RevocationCache({
  redis,
  pool,
  signing: signaturePolicy({ mode: "dev" }),
  consumer: "bench-seed",
  keyPrefix: process.env.BENCH_PREFIX ?? "",
  blockMs: 500,
  reseedIntervalMs: 3_600_000,
  maxSeedAgeMs: 3_600_000,
  logger: pino({ level: "silent" }),
});

const started = performance.now();
await cache.start(controller.signal);
const seedSeconds = (performance.now() - started) / 1000;
const seedMaxRssBytes = process.resourceUsage().maxRSS * 1024;
const entries = cache.size;
while (!cache.fresh) await new Promise((r) => setTimeout(r, 10));

// in-process check: half revoked ids (from the table), half unknown ids
const ids = (await pool.query<{ anchor_id: string }>("SELECT anchor_id FROM session_revocations LIMIT 1000")).rows.map((r) => r.anchor_id);
const probes = ids.flatMap((id) => [{ session_id: id }, { session_id: `${id}-x`, root_sid: `${id}-y` }]);
const checkSeconds = Number(process.env.BENCH_CHECK_SECONDS ?? 2);
let checks = 0;
const checkStart = performance.now();
while (performance.now() - checkStart < checkSeconds * 1000) {
  for (let i = 0; i < probes.length; i++) cache.check("z", probes[i]!);
  checks += probes.length;
}
const checkOpsPerSecond = checks / ((performance.now() - checkStart) / 1000);

// HTTP: the revocation route beside a bare hono route, same server, same client, alternating rounds
const app = new Hono();
app.get("/bare/:zone/:anchor/:id", (c) => c.json({ revoked: false, zone: c.req.param("zone"), anchor: c.req.param("anchor"), id: c.req.param("id") }));
app.route("/", revocationRoutes(cache));
const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
await once(server, "listening");
const address = server.address();
const port = typeof address === "object" && address !== null ? address.port : 0;
const agent = new Agent({ keepAlive: true, maxSockets: 32 });
const get = (path: string) =>
  new Promise<void>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end();
  });
async function load(pathOf: (i: number) => string, seconds: number): Promise<number> {
  let done = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: 32 }, async (_, w) => {
      for (let i = w; performance.now() < end; i += 32) {
        await get(pathOf(i));
        done++;
      }
    }),
  );
  return done / seconds;
}
const httpSeconds = Number(process.env.BENCH_HTTP_SECONDS ?? 3);
const route = (i: number) => `/v1/zones/z/revocations/session_id/${ids[i % ids.length]}`;
const bare = (i: number) => `/bare/z/session_id/${ids[i % ids.length]}`;
await load(route, 0.5); // warm-up
await load(bare, 0.5);
const httpRoute: number[] = [];
const httpBare: number[] = [];
for (let round = 0; round < 2; round++) {
  httpRoute.push(await load(route, httpSeconds / 2));
  httpBare.push(await load(bare, httpSeconds / 2));
}
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
process.stdout.write(
  `${JSON.stringify({ seedSeconds, seedMaxRssBytes, entries, checkOpsPerSecond, httpRouteRps: sum(httpRoute) / httpRoute.length, httpBareRps: sum(httpBare) / httpBare.length })}\n`,
);
controller.abort();
agent.destroy();
server.close();
await pool.end();
redis.disconnect();
process.exit(0);
