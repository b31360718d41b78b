import { FAILURE_REPEAT_MS } from '../observe/failure-log.ts';

export type LineLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * How loud the log line of a CNI STATUS answer is. containerd 2 and CRI-O ask every few seconds (the
 * kubelet's runtime status): a ready answer is routine (debug), and an agent that stays not ready
 * (no pod CIDR yet, its first pass failing) would otherwise warn at every call for as long as it
 * waits. So a failure is a warning when it starts or its error changes, and again every
 * FAILURE_REPEAT_MS with how many calls failed the same way meanwhile (`failedSinceLastSaid`); the
 * first ready answer after failures is said at info. The metrics count every call all the same.
 */
export class StatusLineLevel {
  readonly #now: () => number;
  #failing: { error: string; saidAt: number; unsaid: number } | undefined;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /**
   * The level for a STATUS line that would otherwise be at `level` (info for an answer that went as
   * asked, warn for a failure, error for an internal one), and the fields to add to it.
   */
  level(
    level: LineLevel,
    ok: boolean,
    error: string | undefined,
  ): { level: LineLevel; fields: Record<string, unknown> } {
    const f = this.#failing;
    if (ok) {
      this.#failing = undefined;
      if (f !== undefined) return { level, fields: { failedBefore: true } };
      return { level: level === 'info' ? 'debug' : level, fields: {} };
    }
    const text = error ?? '';
    const now = this.#now();
    if (f !== undefined && f.error === text && now - f.saidAt < FAILURE_REPEAT_MS && level !== 'error') {
      f.unsaid++;
      return { level: 'debug', fields: {} };
    }
    const fields = f !== undefined && f.error === text ? { failedSinceLastSaid: f.unsaid } : {};
    this.#failing = { error: text, saidAt: now, unsaid: 0 };
    return { level, fields };
  }
}
