/**
 * Validates docker-compose.yml and infra/Dockerfile without a Docker engine: every app service is built
 * from the one Dockerfile with an APP that names an existing app, its environment passes that app's own
 * `loadConfig`, it has a /healthz healthcheck on its PORT, and depends_on conditions are satisfiable.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { parseHmacKey } from "@caracal/streams-core";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const read = (path: string) => readFileSync(join(root, path), "utf8");

interface Service {
  image?: string;
  build?: { context?: string; dockerfile?: string; args?: Record<string, string> };
  command?: string[];
  environment?: Record<string, string | number | boolean>;
  ports?: string[];
  volumes?: string[];
  depends_on?: Record<string, { condition?: string }>;
  healthcheck?: { test?: string[] };
  restart?: string;
}

const compose = parse(read("docker-compose.yml"), { merge: true }) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const services = compose.services;
const dockerfile = read("infra/Dockerfile");
/** Services built from infra/Dockerfile that keep running (the one-shot `migrate` reuses an app image). */
const appServices = Object.entries(services).filter(([, s]) => s.build !== undefined && s.restart !== "no");

/** Compose interpolation of `${VAR:-default}` and `${VAR}` with an empty host environment. */
function interpolate(value: string | number | boolean): string {
  return String(value).replace(/\$\{([A-Z0-9_]+)(?::-([^}]*))?\}/g, (_, _name: string, fallback: string | undefined) => fallback ?? "");
}
function environment(service: Service): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(v)]));
}

describe("docker-compose.yml", () => {
  it("has the stores, the one-shot jobs and every app", () => {
    for (const name of ["redis", "postgres", "minio", "minio-init", "migrate", "outbox-dispatcher", "audit-ingestor", "traffic-generator", "revocation-consumer", "policy-invalidator", "observers", "prometheus", "grafana"]) {
      expect(services[name], name).toBeDefined();
    }
    expect(services.redis?.image).toMatch(/^redis:7/);
    expect(services.postgres?.image).toMatch(/^postgres:16/);
    expect(services["minio-init"]?.command?.join(" ")).toMatch(/mc mb --ignore-existing local\/caracal-audit/);
  });

  it("builds every app service from infra/Dockerfile with an APP that is an existing app with a main", () => {
    for (const [name, service] of Object.entries(services).filter(([, s]) => s.build !== undefined)) {
      expect(service.build?.dockerfile, name).toBe("infra/Dockerfile");
      expect(service.build?.context, name).toBe(".");
      const app = service.build?.args?.APP;
      expect(app, `${name}: build arg APP`).toBeTruthy();
      expect(existsSync(join(root, "apps", app as string, "src", "main.ts")), `${name}: apps/${app}/src/main.ts`).toBe(true);
      const pkg = JSON.parse(read(`apps/${app}/package.json`)) as { name: string; scripts?: Record<string, string> };
      expect(pkg.name, name).toBe(`@caracal/${app}`);
      expect(pkg.scripts?.build, name).toBeTruthy();
      expect(service.image, name).toBe(`caracal/${app}:dev`);
    }
    expect(appServices.map(([n]) => n).sort()).toEqual(["audit-ingestor", "observers", "outbox-dispatcher", "policy-invalidator", "revocation-consumer", "traffic-generator"]);
  });

  it("gives every app an environment its own config accepts, with dev keys that decode", async () => {
    for (const [name, service] of appServices) {
      const app = service.build?.args?.APP as string;
      const env = environment(service);
      for (const key of ["DATABASE_URL", "REDIS_URL", "STREAMS_HMAC_KEY", "AUDIT_HMAC_KEY", "PORT"]) expect(env[key], `${name}: ${key}`).toBeTruthy();
      expect(() => parseHmacKey(env.STREAMS_HMAC_KEY as string, "STREAMS_HMAC_KEY")).not.toThrow();
      expect(() => parseHmacKey(env.AUDIT_HMAC_KEY as string, "AUDIT_HMAC_KEY")).not.toThrow();
      const configPath = join(root, "apps", app, "src", "config.ts");
      expect(existsSync(configPath), `${name}: apps/${app}/src/config.ts`).toBe(true);
      const mod = (await import(pathToFileURL(configPath).href)) as { loadConfig?: (env: Record<string, string>) => unknown };
      expect(typeof mod.loadConfig, `${name}: loadConfig`).toBe("function");
      expect(() => mod.loadConfig!(env), `${name}: loadConfig(compose environment)`).not.toThrow();
    }
  });

  it("health-checks every app on /healthz at its PORT, which is published", () => {
    for (const [name, service] of appServices) {
      const port = environment(service).PORT;
      const test = service.healthcheck?.test?.join(" ") ?? "";
      expect(test, name).toContain(`http://127.0.0.1:${port}/healthz`);
      expect(service.ports, name).toContain(`${port}:${port}`);
    }
    const ports = appServices.map(([, s]) => environment(s).PORT);
    expect(new Set(ports).size).toBe(ports.length);
    expect(environment(services["audit-ingestor"] as Service).PORT).toBe("9090");
  });

  it("orders start-up with depends_on conditions that can be met", () => {
    for (const [name, service] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(service.depends_on ?? {})) {
        const target = services[dep];
        expect(target, `${name} -> ${dep}`).toBeDefined();
        expect(["service_healthy", "service_completed_successfully"], `${name} -> ${dep}`).toContain(condition);
        if (condition === "service_healthy") expect(target?.healthcheck?.test, `${dep} needs a healthcheck`).toBeDefined();
        if (condition === "service_completed_successfully") expect(target?.restart, `${dep} must be one-shot`).toBe("no");
      }
    }
    for (const [name] of appServices) expect(services[name]?.depends_on?.migrate?.condition, name).toBe("service_completed_successfully");
    expect(services["audit-ingestor"]?.depends_on?.["minio-init"]?.condition).toBe("service_completed_successfully");
  });

  it("runs migrations from an image that ships @caracal/db with its migrations", () => {
    const migrate = services.migrate as Service;
    expect(migrate.command).toEqual(["node", "node_modules/@caracal/db/dist/migrate.js"]);
    const app = migrate.build?.args?.APP as string;
    const pkg = JSON.parse(read(`apps/${app}/package.json`)) as { dependencies?: Record<string, string> };
    expect(pkg.dependencies?.["@caracal/db"]).toBeDefined();
    const db = JSON.parse(read("packages/db/package.json")) as { files?: string[] };
    expect(db.files).toEqual(expect.arrayContaining(["dist", "drizzle"]));
    expect(existsSync(join(root, "packages/db/src/migrate.ts"))).toBe(true);
  });

  it("points the audit ingestor's export at MinIO and shares the replay volume with the producer", () => {
    const env = environment(services["audit-ingestor"] as Service);
    expect(env.AUDIT_EXPORT_S3_ENDPOINT).toBe("http://minio:9000");
    expect(env.AUDIT_EXPORT_S3_BUCKET).toBe("caracal-audit");
    const replay = "audit-replay:/var/lib/caracal/replay";
    expect(services["audit-ingestor"]?.volumes).toContain(replay);
    expect(services["traffic-generator"]?.volumes).toContain(replay);
    expect(environment(services["traffic-generator"] as Service).AUDIT_REPLAY_DIR).toBe("/var/lib/caracal/replay");
    expect(compose.volumes).toHaveProperty("audit-replay");
  });
});

describe("infra/Dockerfile", () => {
  it("is multi-stage on a pinned node:24.x-slim with an APP build arg", () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24\.\d+(\.\d+)?-slim$/m);
    expect(dockerfile.match(/^FROM \$\{NODE_IMAGE\} AS \w+$/gm)).toEqual(["FROM ${NODE_IMAGE} AS prune", "FROM ${NODE_IMAGE} AS build", "FROM ${NODE_IMAGE} AS runtime"]);
    // the workspace cut down to the app and its dependencies (turbo prune), then a HEALTHCHECK
    expect(dockerfile).toMatch(/turbo prune "@caracal\/\$\{APP\}" --docker/);
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
    expect(dockerfile).toMatch(/^ARG APP$/m);
  });

  it("installs from the lockfile, builds the app and its dependencies, and deploys production dependencies only", () => {
    expect(dockerfile).toMatch(/npm install -g pnpm@10\./);
    expect(dockerfile).toContain("pnpm install --frozen-lockfile");
    expect(dockerfile).toContain('pnpm turbo run build --filter="@caracal/${APP}..."');
    expect(dockerfile).toMatch(/pnpm --filter="@caracal\/\$\{APP\}" deploy --prod (--legacy )?\/out/);
    const pkg = JSON.parse(read("package.json")) as { packageManager?: string };
    expect(pkg.packageManager).toMatch(/^pnpm@10\./);
  });

  it("runs as a non-root user and starts dist/main.js with the services' V8 flag", () => {
    const runtime = dockerfile.slice(dockerfile.lastIndexOf("FROM "));
    expect(runtime).toMatch(/^USER node$/m);
    expect(runtime).toContain('CMD ["node", "--no-allocation-site-pretenuring", "dist/main.js"]');
    expect(runtime).toContain("COPY --from=build --chown=node:node /out ./");
  });

  it("has a .dockerignore that keeps host node_modules and dist out of the context", () => {
    const ignore = read(".dockerignore").split("\n");
    expect(ignore).toEqual(expect.arrayContaining(["**/node_modules", "**/dist", ".git"]));
  });
});
