/**
 * The one abortable sleep and the one backoff-with-jitter of the project. Every loop that waits between
 * attempts (consumers, the outbox dispatcher, leases, sweepers) uses these two.
 */

/**
 * Waits `ms`; resolves true when the time passed, false at once when `signal` is (or becomes) aborted.
 * Never rejects, so a loop reads `while (await sleep(ms, signal))`.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export interface BackoffOptions {
  /** Nominal delay after the first failure; doubles per further failure. */
  baseMs: number;
  /** Upper bound of the nominal delay. */
  capMs: number;
  /** A number in [0, 1); default Math.random(). Tests pass a fixed value. */
  random?: number;
}

/**
 * Delay after `attempt` (>= 1) failed attempts: `baseMs * 2^(attempt-1)` capped at `capMs`, with "equal
 * jitter" (uniform in [d/2, d]), so retries of many callers spread out yet never come back sooner than
 * half the nominal delay.
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const nominal = Math.min(options.capMs, options.baseMs * 2 ** exponent);
  const random = options.random ?? Math.random();
  return Math.round(nominal / 2 + (nominal / 2) * random);
}
