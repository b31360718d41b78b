/**
 * Liveness and readiness, as pure logic over samples with an injected clock (the HTTP server only
 * renders the verdicts).
 *
 * /healthz (liveness: restart me if this fails)
 *   - the event loop is responsive: a timer that should fire every `intervalMs` fires late by more than
 *     `maxLagMs`, or has not fired for that long, means the loop is blocked. Only what a restart can
 *     fix belongs here: a restart cannot bring back an API server, and an agent restarted while the
 *     API is down serves ADD only from the pod CIDRs its last run saved and programs nothing until
 *     the API returns, where the running one keeps everything current.
 * /readyz (readiness: do not count me as up)
 *   - the agent is ready (pod CIDRs known, routes synced, CNI config published) and the last reconcile
 *     pass succeeded;
 *   - the Node watch is fresh: it is not stuck restarting. A healthy watch does not restart (clean
 *     server-side closes do not count); a broken one restarts at least every ~30 s (the informer's
 *     backoff cap). A run of restarts, each within `restartGapMs` of the previous one, that has lasted
 *     longer than `maxRestartingMs` without the resourceVersion moving is "stuck". Nor silent: an API
 *     server that is blackholed or hangs makes each try last a request timeout (60 s) plus backoff,
 *     which a run of restarts does not see, so no answer at all (a list, a watch opening, a watch
 *     line: a healthy watch hears a BOOKMARK about every minute) for `maxSilentMs` fails it too.
 *     Standalone: no watch, always fresh.
 *   - the reconcile loop is not stuck: one pass or per-node step under way for longer than
 *     `maxBusyMs` (a netlink call or a child process that never returns) would otherwise leave the
 *     last pass's verdict green while no Node change is applied any more.
 */

/**
 * A full pass at 5,000 nodes takes well under a second, the CNI binaries' VERSION probes at most their
 * timeout and kill grace (seconds): two minutes in one job is a hang, not a slow pass.
 */
export const DEFAULT_MAX_BUSY_MS = 120_000;

export interface Verdict {
  ok: boolean;
  /** Per check: 'ok' or why not. */
  checks: Record<string, string>;
}

/** Measures event-loop lag: call `tick(now)` from a timer armed every `intervalMs`. */
export class LoopLag {
  private readonly intervalMs: number;
  private last: number;
  /** The lateness of the last tick. */
  lagMs = 0;

  constructor(intervalMs: number, now: number) {
    this.intervalMs = intervalMs;
    this.last = now;
  }

  tick(now: number): void {
    this.lagMs = Math.max(0, now - this.last - this.intervalMs);
    this.last = now;
  }

  /** Undefined when responsive, else why not. */
  problem(now: number, maxLagMs: number): string | undefined {
    const sinceLast = now - this.last;
    if (sinceLast > this.intervalMs + maxLagMs) {
      return `the event-loop timer has not fired for ${Math.round(sinceLast)} ms`;
    }
    if (this.lagMs > maxLagMs) return `event-loop lag ${Math.round(this.lagMs)} ms exceeds ${maxLagMs} ms`;
    return undefined;
  }
}

export interface WatchSample {
  restarts: number;
  resourceVersion: string;
  synced: boolean;
  /** Milliseconds since the API last answered the list or watch; undefined before it first did. */
  silentMs?: number;
}

/** Tracks a run of Node watch restarts; see the file comment. */
export class WatchFreshness {
  private readonly restartGapMs: number;
  private readonly maxRestartingMs: number;
  private readonly maxSilentMs: number;
  private lastRestarts = 0;
  private lastRv = '';
  private lastRestartAt: number | undefined;
  private runStartedAt: number | undefined;

  constructor(opts: { restartGapMs: number; maxRestartingMs: number; maxSilentMs?: number }) {
    this.restartGapMs = opts.restartGapMs;
    this.maxRestartingMs = opts.maxRestartingMs;
    this.maxSilentMs = opts.maxSilentMs ?? opts.maxRestartingMs;
  }

  observe(now: number, s: WatchSample): void {
    if (s.resourceVersion !== this.lastRv && s.resourceVersion !== '') {
      // Progress: events, a relist or a BOOKMARK arrived; whatever restarted before is over.
      this.lastRv = s.resourceVersion;
      this.runStartedAt = undefined;
    }
    if (s.restarts > this.lastRestarts) {
      const sameRun = this.lastRestartAt !== undefined && now - this.lastRestartAt <= this.restartGapMs;
      if (!sameRun || this.runStartedAt === undefined) this.runStartedAt = now;
      this.lastRestartAt = now;
      this.lastRestarts = s.restarts;
    } else if (this.lastRestartAt !== undefined && now - this.lastRestartAt > this.restartGapMs) {
      // No restart for longer than the backoff cap allows: the watch is holding.
      this.runStartedAt = undefined;
    }
  }

  problem(now: number, s: WatchSample): string | undefined {
    this.observe(now, s);
    if (s.silentMs !== undefined && s.silentMs > this.maxSilentMs) {
      return (
        `the API server has not answered the Node list or watch for ${Math.round(s.silentMs / 1000)} s ` +
        `(no list, no watch opened, no event or BOOKMARK: unreachable or hung); routes follow no Node change meanwhile`
      );
    }
    if (this.runStartedAt === undefined) return undefined;
    const failingMs = now - this.runStartedAt;
    if (failingMs <= this.maxRestartingMs) return undefined;
    return (
      `the Node watch has been failing and restarting for ${Math.round(failingMs / 1000)} s ` +
      `(${s.restarts} restarts in total${s.synced ? '' : ', never synced'}); see the agent log for the API error`
    );
  }
}

export interface HealthInputs {
  now: number;
  loop: LoopLag;
  maxLagMs: number;
}

export function liveness(i: HealthInputs): Verdict {
  const loop = i.loop.problem(i.now, i.maxLagMs);
  return { ok: loop === undefined, checks: { eventLoop: loop ?? 'ok' } };
}

/** The Node watch and when it is looked at; undefined in standalone mode. */
export interface WatchInputs {
  now: number;
  freshness: WatchFreshness;
  sample: WatchSample;
}

export type LastPass =
  | { kind: 'none' }
  | { kind: 'ok'; at: number; routeErrors: number }
  | { kind: 'error'; at: number; error: string }
  | { kind: 'waiting'; at: number; reason: string };

/** What the reconcile worker is in, and for how long; undefined when it is idle or backing off. */
export interface LoopWork {
  what: string;
  forMs: number;
}

/** Undefined while the reconcile loop moves, else why it counts as stuck. */
export function stuckLoop(work: LoopWork | undefined, maxBusyMs: number): string | undefined {
  if (work === undefined || work.forMs <= maxBusyMs) return undefined;
  return `the reconcile loop has been in ${work.what} for ${Math.round(work.forMs / 1000)} s: no Node change is applied until it ends (see the agent log)`;
}

export function readiness(i: {
  notReadyReason: string | undefined;
  lastPass: LastPass;
  watch: WatchInputs | undefined;
  /** The reconcile worker's job now (undefined: idle, or not known). */
  work?: LoopWork | undefined;
  /** A job longer than this makes the agent unready; default 120 s. */
  maxBusyMs?: number;
}): Verdict {
  const p = i.lastPass;
  const reconcile =
    p.kind === 'ok'
      ? 'ok'
      : p.kind === 'none'
        ? 'no reconcile pass has finished yet'
        : p.kind === 'error'
          ? `the last reconcile pass failed: ${p.error}`
          : `the last reconcile pass is waiting: ${p.reason}`;
  const watch = i.watch === undefined ? undefined : i.watch.freshness.problem(i.watch.now, i.watch.sample);
  const stuck = stuckLoop(i.work, i.maxBusyMs ?? DEFAULT_MAX_BUSY_MS);
  return {
    ok: i.notReadyReason === undefined && p.kind === 'ok' && watch === undefined && stuck === undefined,
    checks: {
      agent: i.notReadyReason ?? 'ok',
      reconcile: stuck ?? reconcile,
      nodeWatch: i.watch === undefined ? 'ok (standalone: no watch)' : (watch ?? 'ok'),
    },
  };
}
