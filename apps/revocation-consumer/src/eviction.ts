import type { RedisClient } from "@caracal/streams-core";
import { isCluster } from "@caracal/streams-core";

export interface EvictionPolicy {
  /** The maxmemory-policy, or "unknown" when CONFIG GET was refused (managed Redis) or failed. */
  policy: string;
  /** True when Redis may evict keys that have a TTL: an evicted key un-revokes a session. */
  mayEvict: boolean | undefined;
}

/** Policies under which a key with a TTL can be evicted. */
export function policyMayEvict(policy: string): boolean {
  return policy.startsWith("allkeys-") || policy.startsWith("volatile-");
}

/** Reads `maxmemory-policy` (from every master on a cluster; the worst one wins). */
export async function readEvictionPolicy(redis: RedisClient): Promise<EvictionPolicy> {
  const nodes: RedisClient[] = isCluster(redis) ? redis.nodes("master") : [redis];
  const policies: string[] = [];
  for (const node of nodes) {
    try {
      const reply = (await node.call("CONFIG", "GET", "maxmemory-policy")) as string[];
      const value = reply[1];
      if (value === undefined) return { policy: "unknown", mayEvict: undefined };
      policies.push(value);
    } catch {
      return { policy: "unknown", mayEvict: undefined };
    }
  }
  const evicting = policies.find(policyMayEvict);
  const policy = evicting ?? policies[0] ?? "unknown";
  return { policy, mayEvict: evicting !== undefined };
}
