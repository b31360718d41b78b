/**
 * Capped exponential backoff with "equal jitter": the n-th consecutive failure waits between half
 * and all of min(maxMs, initialMs * 2^(n-1)). Jitter keeps a fleet of agents from relisting in
 * lockstep after an API server restart; the floor keeps a single agent from hammering it.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({ initialMs: 500, maxMs: 30_000 });

/** `failures` counts from 1; `random` returns [0, 1). */
export function backoffDelay(
  failures: number,
  opts: BackoffOptions,
  random: () => number = Math.random,
): number {
  const n = Math.max(1, Math.floor(failures));
  const ceiling = Math.min(opts.maxMs, opts.initialMs * 2 ** Math.min(n - 1, 52));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(ceiling / 2 + (ceiling / 2) * r);
}

export function validateBackoff(opts: BackoffOptions): BackoffOptions {
  if (!(Number.isFinite(opts.initialMs) && opts.initialMs > 0)) {
    throw new RangeError(
      `backoff.initialMs must be a positive number of milliseconds (got ${opts.initialMs})`,
    );
  }
  if (!(Number.isFinite(opts.maxMs) && opts.maxMs >= opts.initialMs)) {
    throw new RangeError(`backoff.maxMs must be a number >= backoff.initialMs (got ${opts.maxMs})`);
  }
  return Object.freeze({ initialMs: opts.initialMs, maxMs: opts.maxMs });
}
