/**
 * vitest globalSetup shared by every package: finds Redis and PostgreSQL (env, local, or testcontainers),
 * builds the migrated template database once, and hands the URLs to the test workers via `provide`.
 */
import type { TestProject } from "vitest/node";

import { ensureTemplateDatabase } from "./postgres.js";
import { DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, reachable, servicesRequired } from "./services.js";

declare module "vitest" {
  export interface ProvidedContext {
    redisUrl: string;
    databaseUrl: string;
    templateDatabase: string;
    missingServices: string[];
  }
}

const stops: Array<() => Promise<unknown>> = [];

async function dockerAnswers(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import("testcontainers");
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export async function setup(project: TestProject): Promise<void> {
  let redisUrl = process.env.REDIS_URL ?? DEFAULT_REDIS_URL;
  let databaseUrl = process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
  const missing: string[] = [];
  const redisUp = await reachable(redisUrl, 6379);
  const pgUp = await reachable(databaseUrl, 5432);
  if ((!redisUp || !pgUp) && (await dockerAnswers())) {
    const { GenericContainer } = await import("testcontainers");
    if (!redisUp) {
      const c = await new GenericContainer("redis:7-alpine").withExposedPorts(6379).start();
      stops.push(() => c.stop());
      redisUrl = `redis://${c.getHost()}:${c.getMappedPort(6379)}`;
    }
    if (!pgUp) {
      const c = await new GenericContainer("postgres:16-alpine")
        .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: "trust" })
        .withExposedPorts(5432)
        .start();
      stops.push(() => c.stop());
      databaseUrl = `postgres://postgres@${c.getHost()}:${c.getMappedPort(5432)}/postgres`;
    }
  } else {
    if (!redisUp) missing.push(`Redis at ${redisUrl}`);
    if (!pgUp) missing.push(`PostgreSQL at ${databaseUrl}`);
  }
  if (missing.length > 0 && servicesRequired()) {
    throw new Error(`REQUIRE_SERVICES=1 and these services do not answer: ${missing.join(", ")}`);
  }
  const templateDatabase = pgUp || !missing.some((m) => m.startsWith("PostgreSQL")) ? await ensureTemplateDatabase(databaseUrl) : "";
  project.provide("redisUrl", redisUrl);
  project.provide("databaseUrl", databaseUrl);
  project.provide("templateDatabase", templateDatabase);
  project.provide("missingServices", missing);
}

export async function teardown(): Promise<void> {
  await Promise.all(stops.map((stop) => stop().catch(() => undefined)));
}
