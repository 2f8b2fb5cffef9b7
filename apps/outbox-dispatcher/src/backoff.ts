/**
 * The dispatcher's retry delays: the project's one backoff with jitter (`backoffDelayMs`, streams-core)
 * with the seed's cap. Seed: backoff between retries is exponential with jitter, capped at 60 seconds.
 */
import { backoffDelayMs } from "@caracal/streams-core";

export const MAX_BACKOFF_MS = 60_000;

/** Delay after `attempt` (>= 1) failed attempts, from `baseMs`, capped at 60 s; `random` in [0, 1). */
export function backoffMs(attempt: number, baseMs: number, random?: number): number {
  return backoffDelayMs(attempt, { baseMs, capMs: MAX_BACKOFF_MS, ...(random === undefined ? {} : { random }) });
}
