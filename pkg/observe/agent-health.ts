/**
 * The running side of health.ts: a lag timer, the Node watch sampler and the last pass, fed by the
 * agent's hooks; liveness() and readiness() give the verdicts /healthz and /readyz render.
 */
import type { PassOutcome } from '../agent/controller.ts';
import {
  DEFAULT_MAX_BUSY_MS,
  type LastPass,
  LoopLag,
  type LoopWork,
  liveness,
  readiness,
  stuckLoop,
  type Verdict,
  WatchFreshness,
  type WatchSample,
} from './health.ts';
import type { Logger } from './logger.ts';
import { PassStanding } from './pass-standing.ts';

export interface HealthSource {
  notReadyReason(): string | undefined;
  /** Undefined in standalone mode. */
  watch(): WatchSample | undefined;
  /** The reconcile worker's job under way (undefined: idle or backing off). */
  work?(): LoopWork | undefined;
}

export interface AgentHealthOptions {
  source: HealthSource;
  now?: () => number;
  /** Lag timer period; default 1000 ms. */
  intervalMs?: number;
  /** Default 5000 ms: only a loop blocked this long is unhealthy (GC pauses are far shorter). */
  maxLagMs?: number;
  /** Restarts closer than this belong to one run; default 65 s (twice the informer's 30 s backoff cap + slack). */
  restartGapMs?: number;
  /** A run of restarts longer than this fails readiness; default 5 min. */
  maxRestartingMs?: number;
  /** No answer from the API for longer than this fails readiness; default 5 min. */
  maxSilentMs?: number;
  /** One pass or step under way for longer than this fails readiness; default DEFAULT_MAX_BUSY_MS. */
  maxBusyMs?: number;
  /**
   * Told when the event-loop check turns failing (warn) and when it passes again (info): once per
   * change, not per probe, so a stall the kubelet restarts the agent for is in its log.
   */
  log?: Pick<Logger, 'warn' | 'info'>;
  /** Told when a job is found stuck (maxBusyMs passed) and when it ends (undefined). */
  onStuck?: (stuck: { job: string; sinceEpochMs: number } | undefined) => void;
}

export class AgentHealth {
  private readonly source: HealthSource;
  private readonly now: () => number;
  private readonly intervalMs: number;
  private readonly maxLagMs: number;
  private readonly loop: LoopLag;
  private readonly freshness: WatchFreshness;
  private timer: NodeJS.Timeout | undefined;
  private lastPass: LastPass = { kind: 'none' };
  private readonly standing = new PassStanding();
  private readonly log: Pick<Logger, 'warn' | 'info'> | undefined;
  /** What the event-loop check said last (undefined: passing). */
  private loopProblem: string | undefined;
  /** When it turned failing (this.now() ms). */
  private loopFailingSince = 0;
  private readonly maxBusyMs: number;
  /** The reconcile worker's job last seen stuck (undefined: not stuck), so it is logged once. */
  private stuckWith: string | undefined;
  private readonly onStuck: AgentHealthOptions['onStuck'];

  constructor(opts: AgentHealthOptions) {
    this.source = opts.source;
    this.now = opts.now ?? (() => performance.now());
    this.intervalMs = opts.intervalMs ?? 1000;
    this.maxLagMs = opts.maxLagMs ?? 5000;
    this.loop = new LoopLag(this.intervalMs, this.now());
    this.freshness = new WatchFreshness({
      restartGapMs: opts.restartGapMs ?? 65_000,
      maxRestartingMs: opts.maxRestartingMs ?? 300_000,
      maxSilentMs: opts.maxSilentMs ?? 300_000,
    });
    this.log = opts.log;
    this.maxBusyMs = opts.maxBusyMs ?? DEFAULT_MAX_BUSY_MS;
    this.onStuck = opts.onStuck;
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  /** One timer tick (tests call it with an injected clock). */
  tick(): void {
    const now = this.now();
    this.loop.tick(now);
    this.checkLoop(now);
    const w = this.source.watch();
    if (w !== undefined) this.freshness.observe(now, w);
    this.checkWork();
  }

  /** A stuck reconcile loop, logged when it is found (warn) and when the job ends (info). */
  private checkWork(): void {
    const work = this.source.work?.();
    const stuck = stuckLoop(work, this.maxBusyMs);
    const key = stuck === undefined || work === undefined ? undefined : work.what;
    if (key === this.stuckWith) return;
    const was = this.stuckWith;
    this.stuckWith = key;
    if (stuck !== undefined && work !== undefined) {
      this.log?.warn(
        { job: work.what, busyMs: Math.round(work.forMs), maxBusyMs: this.maxBusyMs },
        'reconcile loop stuck: /readyz fails until the job ends',
      );
      this.onStuck?.({ job: work.what, sinceEpochMs: Date.now() - work.forMs });
    } else if (was !== undefined) {
      this.log?.info({ job: was }, 'reconcile loop moving again');
      this.onStuck?.(undefined);
    }
  }

  /**
   * The event-loop check, logged when its verdict changes. Looked at on every tick (a late tick is
   * the stall) and every probe (a timer that stopped firing).
   */
  private checkLoop(now: number): void {
    const problem = this.loop.problem(now, this.maxLagMs);
    const was = this.loopProblem;
    this.loopProblem = problem;
    if (problem !== undefined && was === undefined) {
      this.loopFailingSince = now;
      this.log?.warn(
        { problem, lagMs: Math.round(this.loop.lagMs), maxLagMs: this.maxLagMs },
        'event loop stalled: /healthz fails (the kubelet restarts the agent if this lasts)',
      );
    } else if (problem === undefined && was !== undefined) {
      this.log?.info(
        { failedMs: Math.round(now - this.loopFailingSince), was },
        'event loop responsive again: /healthz passes',
      );
    }
  }

  onPass = (passed: PassOutcome): void => {
    const at = this.now();
    const outcome = this.standing.judge(passed);
    this.lastPass =
      outcome.kind === 'ok'
        ? { kind: 'ok', at, routeErrors: outcome.report.errors.length }
        : outcome.kind === 'error'
          ? { kind: 'error', at, error: outcome.error }
          : { kind: 'waiting', at, reason: outcome.reason };
  };

  liveness(): Verdict {
    const now = this.now();
    this.checkLoop(now);
    return liveness({ now, loop: this.loop, maxLagMs: this.maxLagMs });
  }

  readiness(): Verdict {
    const w = this.source.watch();
    return readiness({
      notReadyReason: this.source.notReadyReason(),
      lastPass: this.lastPass,
      watch: w === undefined ? undefined : { now: this.now(), freshness: this.freshness, sample: w },
      work: this.source.work?.(),
      maxBusyMs: this.maxBusyMs,
    });
  }
}
