/**
 * Each agent's summary on its own Node, the input of `trellis-agent coverage`: one annotation,
 * `trellis.dev/agent`, holding JSON
 *
 *   {"version":"0.1.0","ready":true,"heartbeat":"2026-11-29T06:00:00Z","peersMissing":1,"missing":["node3/v4"]}
 *
 * `missing` names the peers (and families) whose pod CIDRs this node has no working route to after its
 * last good pass (capped at MAX_MISSING names; `peersMissing` is the full count). `lastPass` is there only
 * while the latest pass did not succeed ("failed: ..." or "waiting: ..."): the list is then older than it.
 *
 * Cost, and why it is written rarely: every Node write is an event for every Node watcher in the
 * cluster (every trellis agent, kube-proxy, ...). So the agent writes the annotation only when its
 * content changes (readiness, the missing set, the version, a pass failing or waiting) and otherwise
 * refreshes `heartbeat` every HEARTBEAT_MS (10 min; the kubelet itself updates Node status every 5 min
 * when nothing changes).
 * `coverage` calls a report older than 3 heartbeats stale: the agent is probably gone.
 */

export const AGENT_ANNOTATION = 'trellis.dev/agent';
export const HEARTBEAT_MS = 10 * 60_000;
export const STALE_AFTER_MS = 3 * HEARTBEAT_MS;
export const MAX_MISSING = 20;

export interface AgentReport {
  version: string;
  ready: boolean;
  /** Why not ready. */
  reason?: string;
  /** ISO 8601, second precision. */
  heartbeat: string;
  peersMissing: number;
  missing: string[];
  /** Why the latest reconcile pass did not succeed; absent after a good one (and from older agents). */
  lastPass?: string;
}

export function encodeReport(r: AgentReport): string {
  return JSON.stringify({
    version: r.version,
    ready: r.ready,
    ...(r.reason === undefined ? {} : { reason: r.reason.slice(0, 300) }),
    heartbeat: r.heartbeat,
    peersMissing: r.peersMissing,
    missing: r.missing.slice(0, MAX_MISSING),
    ...(r.lastPass === undefined ? {} : { lastPass: r.lastPass.slice(0, 300) }),
  });
}

/** Never throws: an annotation someone edited by hand is reported, not fatal. */
export function decodeReport(
  text: string,
): { ok: true; report: AgentReport } | { ok: false; problem: string } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return { ok: false, problem: `${AGENT_ANNOTATION} is not JSON (${(err as Error).message})` };
  }
  const o =
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  if (
    o === undefined ||
    typeof o.version !== 'string' ||
    typeof o.ready !== 'boolean' ||
    typeof o.heartbeat !== 'string' ||
    Number.isNaN(Date.parse(o.heartbeat)) ||
    typeof o.peersMissing !== 'number' ||
    !Array.isArray(o.missing) ||
    !o.missing.every((m) => typeof m === 'string')
  ) {
    return { ok: false, problem: `${AGENT_ANNOTATION} does not have the expected fields` };
  }
  return {
    ok: true,
    report: {
      version: o.version,
      ready: o.ready,
      ...(typeof o.reason === 'string' ? { reason: o.reason } : {}),
      heartbeat: o.heartbeat,
      peersMissing: o.peersMissing,
      missing: o.missing as string[],
      ...(typeof o.lastPass === 'string' ? { lastPass: o.lastPass } : {}),
    },
  };
}

export interface ReportState {
  ready: boolean;
  reason?: string;
  /** The last good pass's. */
  missing: string[];
  /** Set while the latest pass did not succeed, or a pass or step has been stuck for over 2 minutes. */
  lastPass?: { outcome: 'failed' | 'waiting' | 'stuck'; why: string };
  /** The Node object's uid: one re-created under the same name gets the report at once. */
  nodeUid?: string;
}

export interface NodeReporterOptions {
  nodeName: string;
  version: string;
  annotate(name: string, annotations: Record<string, string | null>): Promise<void>;
  now?: () => number;
  heartbeatMs?: number;
  onError?: (err: Error) => void;
  /** After each write that succeeded (a failing run of writes is over). */
  onWritten?: () => void;
}

/** Writes the annotation on change and on heartbeat; one write at a time, the latest state wins. */
export class NodeReporter {
  private readonly opts: NodeReporterOptions;
  private readonly now: () => number;
  private readonly heartbeatMs: number;
  private state: ReportState | undefined;
  private written: { key: string; at: number } | undefined;
  private writing: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: NodeReporterOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
  }

  start(): void {
    // Checked every minute so a failed write is retried without waiting a whole heartbeat.
    this.timer = setInterval(() => void this.flush(), Math.min(60_000, this.heartbeatMs));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  update(state: ReportState): Promise<void> {
    this.state = state;
    return this.flush();
  }

  /** Resolves when the write in flight (and any state that arrived meanwhile) is done. */
  flush(): Promise<void> {
    if (this.writing !== undefined) {
      this.again = true;
      return this.writing;
    }
    this.writing = this.writeLoop().finally(() => {
      this.writing = undefined;
    });
    return this.writing;
  }

  private async writeLoop(): Promise<void> {
    do {
      this.again = false;
      const s = this.state;
      if (s === undefined) return;
      // The pass outcome, not its text: an error that reads differently on each retry (every few
      // seconds under backoff) must not write the Node each time; the heartbeat carries the new text.
      const key = JSON.stringify([
        this.opts.version,
        s.ready,
        s.reason ?? '',
        s.missing,
        s.lastPass?.outcome,
        s.nodeUid,
      ]);
      const now = this.now();
      if (this.written?.key === key && now - this.written.at < this.heartbeatMs) continue;
      const report: AgentReport = {
        version: this.opts.version,
        ready: s.ready,
        ...(s.reason === undefined ? {} : { reason: s.reason }),
        heartbeat: new Date(now).toISOString().replace(/\.\d+Z$/, 'Z'),
        peersMissing: s.missing.length,
        missing: s.missing,
        ...(s.lastPass === undefined ? {} : { lastPass: `${s.lastPass.outcome}: ${s.lastPass.why}` }),
      };
      try {
        await this.opts.annotate(this.opts.nodeName, { [AGENT_ANNOTATION]: encodeReport(report) });
        this.written = { key, at: now };
        this.opts.onWritten?.();
      } catch (err) {
        this.opts.onError?.(err instanceof Error ? err : new Error(String(err)));
        return;
      }
    } while (this.again);
  }
}
