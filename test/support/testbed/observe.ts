/** Watching the kernel from tests while something happens: background pings, route monitors. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

export interface PingCount {
  transmitted: number;
  received: number;
  output: string;
}

/**
 * A ping every 50 ms for `seconds` from a pod; resolves with what ping counted (NaN without a
 * summary). Never rejects, so an early test failure leaves no stray rejection.
 */
export function backgroundPing(
  from: { readonly ns: string },
  to: string,
  seconds: number,
): Promise<PingCount> {
  return new Promise((resolve) => {
    const child = spawn(
      'ip',
      ['netns', 'exec', from.ns, 'ping', '-n', '-q', '-i', '0.05', '-w', String(seconds), to],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('error', (err) =>
      resolve({ transmitted: Number.NaN, received: Number.NaN, output: String(err) }),
    );
    child.on('close', () => {
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
      resolve({
        transmitted: Number(m?.[1] ?? Number.NaN),
        received: Number(m?.[2] ?? Number.NaN),
        output: out,
      });
    });
  });
}

export interface RouteMonitor {
  /** The route notifications seen between start and stop, without the monitor's own sentinels. */
  lines: string[];
  stop(): Promise<void>;
}

/** TEST-NET-2 (RFC 5737): no test routes it, so routes to it are the monitor's own. */
const SENTINEL_NET = '198.51.100.';
let sentinels = 0;

/**
 * `ip monitor route` inside a test namespace, lines collected until stop(). A monitor that never
 * started, or died, would make every "no route changed" assertion pass, so it proves it is listening:
 * at start and again at stop it adds and deletes a blackhole route to a TEST-NET-2 address in that
 * namespace and waits (2 s at most) to see it. Those sentinel lines are left out of `lines`.
 */
export async function monitorRoutes(ns: string): Promise<RouteMonitor> {
  const child: ChildProcess = spawn('ip', ['-n', ns, 'monitor', 'route'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const seen: string[] = [];
  let stderr = '';
  let buf = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const l of parts) {
      if (l.trim() === '') continue;
      if (l.includes(SENTINEL_NET)) seen.push(l);
      else lines.push(l);
    }
  });
  let gone = false;
  const exited = new Promise<void>((r) =>
    child.once('exit', () => {
      gone = true;
      r();
    }),
  );

  const prove = async (when: string): Promise<void> => {
    const addr = `${SENTINEL_NET}${(sentinels++ % 254) + 1}`;
    const dst = `${addr}/32`;
    const ip = (...args: string[]): void => {
      const r = spawnSync('ip', ['-n', ns, 'route', ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`ip -n ${ns} route ${args.join(' ')}: ${r.stderr.trim()}`);
    };
    // Repeated until seen: ip monitor may still be opening its socket right after the spawn.
    for (const deadline = Date.now() + 2000; Date.now() < deadline; ) {
      ip('add', 'blackhole', dst);
      ip('del', 'blackhole', dst);
      for (const until = Date.now() + 100; Date.now() < until; ) {
        // ip monitor prints a /32 as the bare address: "blackhole 198.51.100.7".
        if (seen.some((l) => l.split(/\s+/).includes(addr))) return;
        if (gone) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      if (gone) break;
    }
    child.kill('SIGKILL');
    throw new Error(`ip -n ${ns} monitor route reported nothing ${when} (${stderr.trim() || 'no stderr'})`);
  };

  await prove('at start');
  let stopped: Promise<void> | undefined;
  return {
    lines,
    stop() {
      stopped ??= (async () => {
        try {
          await prove('at stop');
        } finally {
          child.kill('SIGTERM');
          await exited;
        }
      })();
      return stopped;
    },
  };
}
