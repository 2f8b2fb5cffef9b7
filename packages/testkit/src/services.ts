/**
 * Where the test services are: env URLs (defaulting to the local 127.0.0.1 services), else containers
 * started by testcontainers when a Docker engine answers. With REQUIRE_SERVICES=1 (CI) a missing
 * service fails the run; otherwise the tests that need it are skipped.
 */
import net from "node:net";

export interface ServiceUrls {
  redisUrl: string | undefined;
  databaseUrl: string | undefined;
  missing: string[];
}

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";
export const DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres";

export function reachable(url: string, defaultPort: number, timeoutMs = 1500): Promise<boolean> {
  const parsed = new URL(url);
  const port = Number(parsed.port || defaultPort);
  const host = parsed.hostname.replace(/^\[|\]$/g, "");
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

export function servicesRequired(): boolean {
  return process.env.REQUIRE_SERVICES === "1" || process.env.REQUIRE_SERVICES === "true";
}
