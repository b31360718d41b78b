/**
 * The running side of health.ts: a lag timer, the Node watch sampler and the last pass, fed by the
 * agent's hooks; liveness() and readiness() give the verdicts /healthz and /readyz render.
 */
import type { PassOutcome } from '../agent/controller.ts';
import {
  type LastPass,
  LoopLag,
  liveness,
  readiness,
  type Verdict,
  WatchFreshness,
  type WatchSample,
} from './health.ts';

export interface HealthSource {
  notReadyReason(): string | undefined;
  /** Undefined in standalone mode. */
  watch(): WatchSample | undefined;
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

  constructor(opts: AgentHealthOptions) {
    this.source = opts.source;
    this.now = opts.now ?? (() => performance.now());
    this.intervalMs = opts.intervalMs ?? 1000;
    this.maxLagMs = opts.maxLagMs ?? 5000;
    this.loop = new LoopLag(this.intervalMs, this.now());
    this.freshness = new WatchFreshness({
      restartGapMs: opts.restartGapMs ?? 65_000,
      maxRestartingMs: opts.maxRestartingMs ?? 300_000,
    });
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
    const w = this.source.watch();
    if (w !== undefined) this.freshness.observe(now, w);
  }

  onPass = (outcome: PassOutcome): void => {
    const at = this.now();
    this.lastPass =
      outcome.kind === 'ok'
        ? { kind: 'ok', at, routeErrors: outcome.report.errors.length }
        : outcome.kind === 'error'
          ? { kind: 'error', at, error: outcome.error }
          : { kind: 'waiting', at, reason: outcome.reason };
  };

  liveness(): Verdict {
    return liveness({ now: this.now(), loop: this.loop, maxLagMs: this.maxLagMs });
  }

  readiness(): Verdict {
    const w = this.source.watch();
    return readiness({
      notReadyReason: this.source.notReadyReason(),
      lastPass: this.lastPass,
      watch: w === undefined ? undefined : { now: this.now(), freshness: this.freshness, sample: w },
    });
  }
}
