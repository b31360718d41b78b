/**
 * Hands memory back to the kernel once a burst of work is over (cmd/agent/adapters.ts: malloc's free
 * pages, and now and then the clean file pages, pkg/agent/file-page-policy.ts). A start-up sync, a run
 * of CNI calls or a full pass grows malloc's arenas, and glibc returns free pages in the middle of
 * its heap only when asked (malloc_trim). At 5,000 kubelet-sized Nodes and 100 pods
 * (bench/footprint.ts, 90 s, one run each, 1-second samples): max RSS 104.9 MB and 100.2 at the end
 * without the trim, 95.9 and 92.2 with it, at the same CPU (0.72 % of a core); gdb's malloc_trim(0)
 * on a running agent took its [heap] from 10.4 to 5.4 MB.
 *
 * After `idleMs` without work it trims (0.3-0.7 ms there), at most once per `minIntervalMs`. V8's
 * compacting collection (gc({flavor: 'last-resort'}) under --expose-gc) took the max to ~92 MB, but
 * it blocks the JS thread for 45-57 ms at 5,000 Nodes: in the route-convergence bench it held back
 * the one Node event in a hundred that arrived meanwhile (p99 3.5 -> 15.8 ms), so V8's own memory
 * reducer, which marks incrementally, keeps that job (bench/HISTORY.md).
 */

export interface IdleTrimOptions {
  /** Memory back to the kernel (malloc_trim(0), ...); what it returns is passed on to onTrim. */
  trim: () => Record<string, number> | undefined;
  /** How long without work before trimming. */
  idleMs: number;
  /** The least time between two trims. */
  minIntervalMs: number;
  /** Resident bytes now (process.memoryUsage.rss). */
  rss: () => number;
  onTrim: (outcome: {
    durationMs: number;
    rssBefore: number;
    rssAfter: number;
    detail: Record<string, number> | undefined;
  }) => void;
  /** A trim failed; no more are tried. */
  onError: (err: unknown) => void;
  now?: () => number;
}

export class IdleTrim {
  private readonly opts: IdleTrimOptions;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private lastTrim = Number.NEGATIVE_INFINITY;
  private lastWork = Number.NEGATIVE_INFINITY;
  private stopped = false;

  constructor(opts: IdleTrimOptions) {
    this.opts = opts;
    this.now = opts.now ?? performance.now.bind(performance);
  }

  /** Work happened: trim once it has been quiet for idleMs (the wait starts over with every call). */
  noteWork(): void {
    if (this.stopped) return;
    this.lastWork = this.now();
    if (this.timer === undefined) this.arm(this.opts.idleMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(ms: number): void {
    // unref: a pending trim never keeps the process alive.
    this.timer = setTimeout(() => this.fire(), ms).unref();
  }

  /** The timer ran out: trim, or wait for what is left of the quiet time or of the interval. */
  private fire(): void {
    this.timer = undefined;
    const now = this.now();
    const wait = Math.max(
      this.lastWork + this.opts.idleMs - now,
      this.lastTrim + this.opts.minIntervalMs - now,
    );
    if (wait > 0) {
      this.arm(wait);
      return;
    }
    this.lastTrim = now;
    const rssBefore = this.opts.rss();
    let detail: Record<string, number> | undefined;
    try {
      detail = this.opts.trim();
    } catch (err) {
      // A runtime that cannot do it once (a libc without malloc_trim) cannot do it later either.
      this.stop();
      this.opts.onError(err);
      return;
    }
    this.opts.onTrim({ durationMs: this.now() - now, rssBefore, rssAfter: this.opts.rss(), detail });
  }
}
