import { errorText } from '../error-text.ts';
import type { Logger } from './logger.ts';

/** How often a failure that goes on with the same error is said again. */
export const FAILURE_REPEAT_MS = 5 * 60_000;

/**
 * The log of a task that retries: a warning when it starts failing or fails differently, the same
 * failure again only every FAILURE_REPEAT_MS (with how many attempts failed since), and one info line
 * when it works again. A retry loop that warned at every attempt buried everything else in the log
 * and never said when it was over.
 */
export class FailureLog {
  readonly #log: Logger;
  readonly #msg: string;
  readonly #now: () => number;
  #failing: { error: string; since: number; saidAt: number; unsaid: number; attempts: number } | undefined;

  /** `msg`: the warning's message, e.g. 'could not set NetworkUnavailable=False'. */
  constructor(log: Logger, msg: string, now: () => number = Date.now) {
    this.#log = log;
    this.#msg = msg;
    this.#now = now;
  }

  get failing(): boolean {
    return this.#failing !== undefined;
  }

  failed(err: unknown, fields: Record<string, unknown> = {}): void {
    const error = errorText(err);
    const now = this.#now();
    const f = this.#failing;
    if (f !== undefined && f.error === error && now - f.saidAt < FAILURE_REPEAT_MS) {
      f.unsaid++;
      f.attempts++;
      return;
    }
    const again = f !== undefined && f.error === error;
    this.#log.warn(
      {
        ...fields,
        error,
        ...(again ? { failingForMs: now - f.since, failedSinceLastSaid: f.unsaid + 1 } : {}),
      },
      this.#msg,
    );
    this.#failing = {
      error,
      since: f?.since ?? now,
      saidAt: now,
      unsaid: 0,
      attempts: (f?.attempts ?? 0) + 1,
    };
  }

  succeeded(msg: string, fields: Record<string, unknown> = {}): void {
    const f = this.#failing;
    if (f === undefined) return;
    this.#failing = undefined;
    this.#log.info({ ...fields, failedAttempts: f.attempts, failingForMs: this.#now() - f.since }, msg);
  }
}
