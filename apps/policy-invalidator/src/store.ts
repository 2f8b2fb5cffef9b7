/**
 * Each zone's current bundle, swapped atomically (one map write), and the long polls waiting on a zone.
 * A reader gets either the old bundle or the new one, never a half-built one.
 */
import type { Bundle } from "./bundle.js";

export class BundleStore {
  private readonly bundles = new Map<string, Bundle>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private waiting = 0;

  get(zoneId: string): Bundle | undefined {
    return this.bundles.get(zoneId);
  }

  zones(): string[] {
    return [...this.bundles.keys()];
  }

  /** Long polls now waiting. */
  get waiterCount(): number {
    return this.waiting;
  }

  /** Installs `bundle` for its zone and wakes the zone's long polls when the revision changed. */
  put(bundle: Bundle): void {
    const before = this.bundles.get(bundle.zoneId);
    this.bundles.set(bundle.zoneId, bundle);
    if (before?.revision === bundle.revision) return;
    const set = this.waiters.get(bundle.zoneId);
    if (set === undefined) return;
    this.waiters.delete(bundle.zoneId);
    for (const wake of set) wake();
  }

  /**
   * Resolves when the zone's revision is no longer `etag` (the bundle changed), after `waitMs`, or when
   * `signal` aborts (the client went away); true when the bundle changed.
   */
  waitForChange(zoneId: string, etag: string, waitMs: number, signal?: AbortSignal): Promise<boolean> {
    const current = this.bundles.get(zoneId);
    if (current !== undefined && current.etag !== etag) return Promise.resolve(true);
    return new Promise((resolve) => {
      let set = this.waiters.get(zoneId);
      if (set === undefined) this.waiters.set(zoneId, (set = new Set()));
      this.waiting++;
      let settled = false;
      const finish = (changed: boolean) => {
        if (settled) return;
        settled = true;
        this.waiting--;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        set.delete(wake);
        if (set.size === 0 && this.waiters.get(zoneId) === set) this.waiters.delete(zoneId);
        resolve(changed);
      };
      const wake = () => finish(true);
      const onAbort = () => finish(false);
      const timer = setTimeout(() => finish(false), waitMs);
      set.add(wake);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
