/**
 * `streams`: per stream of the registry, its length and dead-letter length; per group, lag, pending,
 * oldest pending age, and each consumer with its pending count and idle time, as Redis reports them
 * (XLEN, XINFO GROUPS, XPENDING, XINFO CONSUMERS). `--watch` refreshes in place.
 */
import type { RedisClient } from "@caracal/streams-core";
import { Topics, errorMessage, sleep, streamKey } from "@caracal/streams-core";

import type { Connections } from "../config.js";
import type { Io } from "../output.js";
import { entryIdAgeSeconds, formatAge, printJson, renderTable } from "../output.js";

export interface ConsumerStatus {
  name: string;
  pending: number;
  idleMs: number;
}

export interface GroupStatus {
  group: string;
  /** Entries not yet delivered to the group; null when Redis cannot tell (entries deleted). */
  lag: number | null;
  pending: number;
  oldestPendingId: string | null;
  oldestPendingAgeSeconds: number | null;
  lastDeliveredId: string;
  consumers: ConsumerStatus[];
}

export interface StreamStatus {
  stream: string;
  length: number;
  deadLetterStream: string | null;
  deadLetterLength: number | null;
  groups: GroupStatus[];
}

/** `[k1, v1, k2, v2, ...]` of XINFO replies as an object. */
function pairs(reply: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
  return out;
}

const NO_SUCH_KEY = /no such key/i;

async function groupsOf(redis: RedisClient, key: string): Promise<GroupStatus[]> {
  let reply: unknown[];
  try {
    reply = (await redis.xinfo("GROUPS", key)) as unknown[];
  } catch (error) {
    if (NO_SUCH_KEY.test(errorMessage(error))) return [];
    throw error;
  }
  return Promise.all(
    reply.map(async (raw) => {
      const g = pairs(raw);
      const group = String(g.name);
      const [summary, consumers] = await Promise.all([
        redis.xpending(key, group) as Promise<[number, string | null, string | null, unknown]>,
        redis.xinfo("CONSUMERS", key, group) as Promise<unknown[]>,
      ]);
      const oldest = summary[1] ?? null;
      const age = entryIdAgeSeconds(oldest);
      return {
        group,
        lag: g.lag === null || g.lag === undefined ? null : Number(g.lag),
        pending: Number(g.pending ?? 0),
        oldestPendingId: oldest,
        oldestPendingAgeSeconds: age === undefined ? null : age,
        lastDeliveredId: String(g["last-delivered-id"] ?? ""),
        consumers: consumers.map((c) => {
          const p = pairs(c);
          return { name: String(p.name), pending: Number(p.pending ?? 0), idleMs: Number(p.idle ?? 0) };
        }),
      };
    }),
  );
}

export async function collectStreamStatus(redis: RedisClient, keyPrefix: string): Promise<StreamStatus[]> {
  return Promise.all(
    Object.values(Topics).map(async (topic) => {
        const key = streamKey(topic.stream, keyPrefix);
        const dead = topic.deadLetterStream;
        const [length, deadLength, groups] = await Promise.all([
          redis.xlen(key),
          dead === undefined ? Promise.resolve(null) : redis.xlen(streamKey(dead, keyPrefix)),
          groupsOf(redis, key),
        ]);
      return { stream: topic.stream, length, deadLetterStream: dead ?? null, deadLetterLength: deadLength, groups };
    }),
  );
}

export function renderStreamStatus(io: Io, status: readonly StreamStatus[]): string {
  const rows: unknown[][] = [];
  for (const s of status) {
    const dead = s.deadLetterLength === null ? "-" : String(s.deadLetterLength);
    if (s.groups.length === 0) rows.push([s.stream, s.length, "-", "-", "-", "-", "-", dead]);
    for (const g of s.groups) {
      const consumers = g.consumers.map((c) => `${c.name}(${c.pending}p,${formatAge(c.idleMs / 1000)} idle)`).join(" ") || "-";
      rows.push([s.stream, s.length, g.group, g.lag ?? "?", g.pending, formatAge(g.oldestPendingAgeSeconds ?? undefined), consumers, dead]);
    }
  }
  return renderTable(io, ["stream", "length", "group", "lag", "pending", "oldest pending", "consumers", "dead letters"], rows);
}

export async function streamsCommand(conn: Connections, io: Io, options: { json?: boolean; watch?: boolean; intervalMs: number }, signal: AbortSignal): Promise<void> {
  const redis = conn.redis();
  for (;;) {
    const status = await collectStreamStatus(redis, conn.keyPrefix);
    if (options.json) printJson(io, status);
    else {
      const table = renderStreamStatus(io, status);
      // In place: cursor home and clear the screen between frames on a terminal.
      io.out(options.watch && io.isTTY ? `\x1b[H\x1b[2J${new Date().toISOString()}\n${table}` : table);
    }
    if (!options.watch) return;
    if (!(await sleep(options.intervalMs, signal))) return;
  }
}
