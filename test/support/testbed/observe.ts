/** Watching the kernel from tests while something happens: background pings, route monitors. */
import { type ChildProcess, spawn } from 'node:child_process';
import type { TestbedPod } from './testbed.ts';

export interface PingCount {
  transmitted: number;
  received: number;
  output: string;
}

/**
 * A ping every 50 ms for `seconds` from a pod; resolves with what ping counted (NaN without a
 * summary). Never rejects, so an early test failure leaves no stray rejection.
 */
export function backgroundPing(from: TestbedPod, to: string, seconds: number): Promise<PingCount> {
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

/** `ip monitor route` inside a node namespace; lines collected until stop(). */
export function monitorRoutes(ns: string): { lines: string[]; stop(): Promise<void> } {
  const child: ChildProcess = spawn('ip', ['-n', ns, 'monitor', 'route'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const lines: string[] = [];
  let buf = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts.filter((l) => l.trim() !== ''));
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    lines,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
