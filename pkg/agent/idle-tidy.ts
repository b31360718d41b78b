/**
 * Hands the garbage of a burst of work back to the kernel once the burst is over. A start-up sync, a
 * run of CNI calls or a full pass grows malloc's arenas and V8's heap. malloc returns free pages in
 * the middle of its heap only when asked (malloc_trim), and V8 its free pages only when its memory
 * reducer gets round to it, seconds later. At 5,000 kubelet-sized Nodes and 100 pods
 * (bench/footprint.ts, 2 minutes, two runs each, alternating with the commit before): max RSS 101.4
 * and 102.9 MB -> 92.0 and 92.1; CPU 0.64 and 0.77 % of a core -> 0.72 and 0.78. The trim alone
 * (90 s, one run) reached 95.9 MB.
 *
 * After `idleMs` without work the tidy trims malloc (well under a millisecond), at most once per
 * `minIntervalMs`. The full collection, which compacts and blocks the JS thread for tens of
 * milliseconds, runs only when resident memory grew by `collectAfterGrowth` bytes since the last one
 * (and at the first tidy), so a node with steady pod churn does not pay it every time.
 */

export interface TidyActions {
  /** A full, compacting garbage collection; undefined when the runtime exposes none (no --expose-gc). */
  collectGarbage: (() => void) | undefined;
  /** malloc_trim(0): free pages of every arena back to the kernel. */
  trimMalloc(): void;
}

export interface TidyOutcome {
  /** Whether the full collection ran (else the trim alone). */
  collected: boolean;
  durationMs: number;
  rssBefore: number;
  rssAfter: number;
}

export interface IdleTidyOptions {
  actions: TidyActions;
  /** How long without work before tidying. */
  idleMs: number;
  /** The least time between two tidies. */
  minIntervalMs: number;
  /** Growth of resident memory since the last collection that makes the next tidy collect, bytes. */
  collectAfterGrowth: number;
  /** Resident bytes now (process.memoryUsage.rss). */
  rss: () => number;
  onTidy: (outcome: TidyOutcome) => void;
  /** A tidy failed; no more are tried. */
  onError: (err: unknown) => void;
  now?: () => number;
}

export class IdleTidy {
  private readonly opts: IdleTidyOptions;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private lastTidy = Number.NEGATIVE_INFINITY;
  /** Resident bytes right after the last collection; undefined before the first. */
  private rssAfterCollect: number | undefined;
  private stopped = false;

  constructor(opts: IdleTidyOptions) {
    this.opts = opts;
    this.now = opts.now ?? performance.now.bind(performance);
  }

  /** Work happened: tidy once it has been quiet for idleMs (the wait starts over with every call). */
  noteWork(): void {
    if (this.stopped) return;
    if (this.timer !== undefined) {
      this.timer.refresh();
      return;
    }
    this.arm(this.opts.idleMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    // unref: a pending tidy never keeps the process alive.
    this.timer = setTimeout(() => this.fire(), ms).unref();
  }

  private fire(): void {
    this.timer = undefined;
    const wait = this.lastTidy + this.opts.minIntervalMs - this.now();
    if (wait > 0) {
      this.arm(Math.max(wait, this.opts.idleMs));
      return;
    }
    const { actions, rss } = this.opts;
    const start = this.now();
    this.lastTidy = start;
    const rssBefore = rss();
    const collect =
      actions.collectGarbage !== undefined &&
      (this.rssAfterCollect === undefined ||
        rssBefore - this.rssAfterCollect >= this.opts.collectAfterGrowth);
    try {
      if (collect) actions.collectGarbage?.();
      actions.trimMalloc();
    } catch (err) {
      // A runtime that cannot do it once (a libc without malloc_trim) cannot do it later either.
      this.stop();
      this.opts.onError(err);
      return;
    }
    const rssAfter = rss();
    if (collect) this.rssAfterCollect = rssAfter;
    this.opts.onTidy({ collected: collect, durationMs: this.now() - start, rssBefore, rssAfter });
  }
}
