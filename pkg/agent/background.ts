import { errorText } from '../error-text.ts';
import type { Logger } from '../observe/logger.ts';

/**
 * The agent's work beside its passes and CNI calls: periodic tasks and one-off jobs. Each failure is
 * logged with what failed (a job that fails quietly is one an operator never hears of), and stop()
 * waits for what is still running, so nothing writes after the agent let go of its locks.
 */
export class Background {
  readonly #log: Logger;
  readonly #signal: AbortSignal;
  readonly #inFlight = new Set<Promise<void>>();
  readonly #timers: NodeJS.Timeout[] = [];

  constructor(log: Logger, signal: AbortSignal) {
    this.#log = log;
    this.#signal = signal;
  }

  /** Runs `work` to its end; a rejection is logged at warn as `task`. */
  track(task: string, work: Promise<unknown>): void {
    const p = work.then(
      () => undefined,
      (err: unknown) => this.#log.warn({ task, error: errorText(err) }, 'background task failed'),
    );
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  /**
   * Runs `fn` every `ms` (and at once with runNow) until stop or the signal; tracked as `task`. One run
   * at a time: a tick while the last run lasts is skipped (a spool drain slower than its period would
   * replay the same files twice, and runs waiting on a hung one would pile up without bound).
   */
  every(task: string, ms: number, fn: () => Promise<unknown>, runNow: boolean): void {
    let running = false;
    const run = (): void => {
      if (this.#signal.aborted || running) return;
      running = true;
      let work: Promise<unknown>;
      try {
        work = fn();
      } catch (err) {
        work = Promise.reject(err);
      }
      this.track(
        task,
        work.finally(() => {
          running = false;
        }),
      );
    };
    if (runNow) run();
    const t = setInterval(run, ms);
    t.unref();
    this.#timers.push(t);
  }

  /** Stops the timers and waits up to `waitMs` for what runs (and `more`); true when it all ended. */
  async stop(waitMs: number, more: readonly (Promise<unknown> | undefined)[] = []): Promise<boolean> {
    for (const t of this.#timers) clearInterval(t);
    let waited: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      Promise.all([...more, ...this.#inFlight]).then(() => true),
      new Promise<boolean>((resolve) => {
        waited = setTimeout(() => resolve(false), waitMs);
      }),
    ]);
    clearTimeout(waited);
    return ended;
  }
}
