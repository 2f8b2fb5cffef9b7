/**
 * The CLI reads the same environment as the services: REDIS_URL, DATABASE_URL, CARACAL_KEY_PREFIX,
 * CARACAL_MODE, STREAMS_HMAC_KEY (+ _PREVIOUS) for re-signing replayed dead letters, AUDIT_HMAC_KEY for
 * `audit verify`. Each connection is opened only by the commands that need it, so `streams` needs no
 * DATABASE_URL and `keys generate` needs nothing.
 */
import type { SignaturePolicy } from "@caracal/streams-core";
import { ConfigError, closeClient, connectRedis, signaturePolicy } from "@caracal/streams-core";
import type { RedisClient } from "@caracal/streams-core";
import pg from "pg";

import { CliError, ExitCode } from "./exit-codes.js";

export type Env = Record<string, string | undefined>;

const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";
const DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres";

function value(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === "" ? undefined : v;
}

/** Connections opened lazily for one command and closed at its end. */
export class Connections {
  private redisClient: RedisClient | undefined;
  private pgPool: pg.Pool | undefined;

  constructor(readonly env: Env) {}

  get keyPrefix(): string {
    return value(this.env, "CARACAL_KEY_PREFIX") ?? "";
  }

  redis(): RedisClient {
    if (this.redisClient === undefined) {
      const url = value(this.env, "REDIS_URL") ?? DEFAULT_REDIS_URL;
      try {
        this.redisClient = connectRedis(url, { connectionName: "caracal-streams-cli" });
      } catch (error) {
        throw configError(error);
      }
      // Errors surface on the command that failed; ioredis would otherwise print every reconnect attempt.
      this.redisClient.on("error", () => undefined);
    }
    return this.redisClient;
  }

  pool(): pg.Pool {
    if (this.pgPool === undefined) {
      this.pgPool = new pg.Pool({ connectionString: value(this.env, "DATABASE_URL") ?? DEFAULT_DATABASE_URL, max: 2, connectionTimeoutMillis: 5_000 });
      this.pgPool.on("error", () => undefined);
    }
    return this.pgPool;
  }

  /** The `_sig` policy, for commands that write to a stream. */
  signing(): SignaturePolicy {
    const mode = value(this.env, "CARACAL_MODE") ?? "stable";
    if (mode !== "dev" && mode !== "rc" && mode !== "stable") throw new CliError("CARACAL_MODE: must be dev, rc or stable", ExitCode.config);
    try {
      return signaturePolicy({ mode, keyHex: value(this.env, "STREAMS_HMAC_KEY"), previousKeysHex: value(this.env, "STREAMS_HMAC_KEYS_PREVIOUS") });
    } catch (error) {
      throw configError(error);
    }
  }

  async close(): Promise<void> {
    const redis = this.redisClient;
    const pool = this.pgPool;
    this.redisClient = undefined;
    this.pgPool = undefined;
    if (redis !== undefined) await closeClient(redis).catch(() => undefined);
    if (pool !== undefined) await pool.end().catch(() => undefined);
  }
}

function configError(error: unknown): CliError {
  if (error instanceof ConfigError) return new CliError(error.problems.join("; "), ExitCode.config);
  return new CliError(error instanceof Error ? error.message : String(error), ExitCode.config);
}
