/**
 * `ip -ts monitor route` inside the current namespace, parsed: every route added or deleted with
 * the wall-clock time (epoch ms, microsecond precision) at which `ip` received the kernel's
 * notification. Waiters resolve when a route matching a predicate shows up.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface RouteEvent {
  at: number;
  deleted: boolean;
  dst: string;
  line: string;
}

/** `[2026-11-29T05:36:47.455170] ...` in local time, to epoch ms. */
function parseTs(ts: string): number {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{6})$/.exec(ts);
  if (!m) return Number.NaN;
  return new Date(m[1]!).getTime() + Number(m[2]) / 1000;
}

export class RouteMonitor {
  readonly events: RouteEvent[] = [];
  private readonly child: ChildProcess;
  private readonly waiters: { match: (e: RouteEvent) => boolean; resolve: (e: RouteEvent) => void }[] = [];
  private errors = '';
  private readonly started: Promise<void>;

  /** `args` lets a caller add `-n NS`; by default the namespace this process runs in. */
  constructor(args: string[] = []) {
    // A 4 MiB receive buffer (ip asks 1 MiB by default; the kernel caps it at net.core.rmem_max): the
    // agent writes 4,999 routes in ~100 ms, and a monitor behind on its pipe to us lost notifications
    // to ENOBUFS and exited.
    this.child = spawn('ip', [...args, '-rcvbuf', String(4 << 20), '-ts', 'monitor', 'route'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.errors += d;
    });
    this.started = new Promise((resolve) => this.child.once('spawn', () => resolve()));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const m = /^\[([^\]]+)\] (Deleted )?(\S+)/.exec(line);
      if (!m) return;
      let dst = m[3]!;
      if (dst === 'blackhole' || dst === 'local' || dst === 'broadcast' || dst === 'unreachable')
        dst = line.split(' ')[m[2] ? 3 : 2] ?? dst;
      const ev: RouteEvent = { at: parseTs(m[1]!), deleted: m[2] !== undefined, dst, line };
      this.events.push(ev);
      for (let i = this.waiters.length - 1; i >= 0; i--) {
        const w = this.waiters[i]!;
        if (w.match(ev)) {
          this.waiters.splice(i, 1);
          w.resolve(ev);
        }
      }
    });
  }

  /** Resolves after the process started and had a moment to subscribe. */
  async ready(): Promise<void> {
    await this.started;
    await new Promise((r) => setTimeout(r, 100));
  }

  waitFor(match: (e: RouteEvent) => boolean, timeoutMs = 10_000): Promise<RouteEvent> {
    const seen = this.events.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching route event within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  stderr(): string {
    return this.errors;
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}

/** Wall-clock now in epoch ms with sub-millisecond precision (comparable to `ip -ts`). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
