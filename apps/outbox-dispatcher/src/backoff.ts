/** Seed: backoff between retries is exponential with jitter, capped at 60 seconds. */
export const MAX_BACKOFF_MS = 60_000;

/**
 * Delay before attempt `attempt + 1`, after `attempt` (>= 1) failed attempts: `base * 2^(attempt-1)`
 * capped at 60 s, then "equal jitter" (uniform in [d/2, d]) so retries of many rows spread out but never
 * come back sooner than half the nominal delay. `random` in [0, 1).
 */
export function backoffMs(attempt: number, baseMs: number, random: number = Math.random()): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const nominal = Math.min(MAX_BACKOFF_MS, baseMs * 2 ** exponent);
  return Math.round(nominal / 2 + (nominal / 2) * random);
}
