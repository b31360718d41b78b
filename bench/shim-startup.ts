/**
 * How long the runtime waits for the compiled shim: N runs of dist/bin/trellis doing VERSION (no
 * socket) and ADD (one round trip to a trivial agent on a unix socket in this process), each timed
 * from spawn to exit. Prints a table and, last, one JSON line. No assertions.
 *
 *   node_modules/.bin/node scripts/build.ts && node_modules/.bin/node bench/shim-startup.ts [runs]
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { encodeResponse, okResponse } from '../pkg/shim/protocol.ts';

const bin = join(import.meta.dirname, '..', 'dist', 'bin', 'trellis');
if (!existsSync(bin)) {
  process.stderr.write('dist/bin/trellis is missing: run `node_modules/.bin/node scripts/build.ts` first\n');
  process.exit(2);
}
const runs = Number(process.argv[2] ?? 200);

const dir = mkdtempSync(join(tmpdir(), 'trl-bench-'));
const socket = join(dir, 'cni.sock');
const answer = encodeResponse(
  okResponse({
    cniVersion: '1.1.0',
    interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/bench' }],
    ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 0 }],
  }),
);
const server = createServer((conn) => {
  conn.on('error', () => {});
  conn.on('data', (d: Buffer) => {
    if (d.includes(0x0a)) conn.end(answer);
  });
});
await new Promise<void>((resolve) => server.listen(socket, resolve));

const config = JSON.stringify({ cniVersion: '1.1.0', name: 'trellis', type: 'trellis', socket });
const envs: Record<string, Record<string, string>> = {
  VERSION: { CNI_COMMAND: 'VERSION' },
  ADD: {
    CNI_COMMAND: 'ADD',
    CNI_CONTAINERID: 'bench0001',
    CNI_NETNS: '/var/run/netns/bench',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
  },
};

function once(env: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(bin, [], { env, stdio: ['pipe', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`shim exited ${code}`));
      else resolve(performance.now() - t0);
    });
    child.stdin.end(config);
  });
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

const summary: Record<string, { runs: number; p50Ms: number; p99Ms: number; minMs: number; maxMs: number }> =
  {};
try {
  for (const [name, env] of Object.entries(envs)) {
    for (let i = 0; i < 5; i++) await once(env); // warm the page cache: the binary is ~100 MB
    const times: number[] = [];
    for (let i = 0; i < runs; i++) times.push(await once(env));
    times.sort((a, b) => a - b);
    const r = (x: number): number => Math.round(x * 100) / 100;
    summary[name] = {
      runs,
      p50Ms: r(pct(times, 50)),
      p99Ms: r(pct(times, 99)),
      minMs: r(times[0] ?? Number.NaN),
      maxMs: r(times.at(-1) ?? Number.NaN),
    };
  }
} finally {
  server.close();
  rmSync(dir, { recursive: true, force: true });
}

const rows = Object.entries(summary).map(([name, s]) =>
  [
    name.padEnd(8),
    String(s.runs).padStart(5),
    ...[s.p50Ms, s.p99Ms, s.minMs, s.maxMs].map((v) => v.toFixed(2).padStart(8)),
  ].join(' '),
);
process.stdout.write(`${['command ', ' runs', '  p50 ms', '  p99 ms', '  min ms', '  max ms'].join(' ')}\n`);
process.stdout.write(`${rows.join('\n')}\n`);
process.stdout.write(`${JSON.stringify({ bench: 'shim-startup', spawnToExit: summary })}\n`);
