/**
 * How long the runtime waits for the compiled shim, and how much of that is the Bun runtime itself.
 * Rounds alternate between (each timed from spawn to exit, medians):
 *
 * - `trellis VERSION`: dist/bin/trellis answering VERSION (reads stdin, no socket);
 * - `trellis ADD`: the same, one round trip to a trivial agent on a unix socket in this process;
 * - `evicted VERSION`: another copy of it whose page cache is dropped once before the rounds, so its
 *   execs fault it back in small folios: the state a shim left alone drifts into where page cache is
 *   reclaimed (lib/installed-plugin.ts);
 * - `bun floor`: an empty program (`process.exit(0)`) compiled by the same Bun with the same flags,
 *   the least any Bun-compiled shim can cost;
 * - `ptp VERSION`: Debian's Go `ptp` plugin answering VERSION, the reference's own start.
 *
 * Every binary is first copied into one directory as install-cni copies the shim onto a node
 * (lib/installed-plugin.ts), so all start from a freshly written file.
 *
 * Prints a table and, last, one JSON line (also written to --out, default
 * bench/results/shim-startup.json). No assertions.
 *
 *   node_modules/.bin/node scripts/build.ts && node_modules/.bin/node bench/shim-startup.ts [--runs 200] [--out FILE]
 *     [--other PATH]   (another shim build, e.g. an older commit's, timed on the same ADD: `other ADD`)
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { encodeResponse, okResponse } from '../pkg/shim/protocol.ts';
import { bunBinary, SHIM_COMPILE_FLAGS } from '../scripts/shim-compile.ts';
import { REFERENCE_PLUGIN_DIR } from '../test/support/cni-driver.ts';
import { tempDir, undoOnSignals } from '../test/support/signal-undo.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { installPlugin } from './lib/installed-plugin.ts';
import { commitId, median, pct, ratio, round, table, writeResult } from './lib/stats.ts';

const root = join(import.meta.dirname, '..');
const shim = join(root, 'dist', 'bin', 'trellis');
const bun = bunBinary(root);
const ptp = join(REFERENCE_PLUGIN_DIR, 'ptp');
if (!existsSync(shim)) {
  process.stderr.write('dist/bin/trellis is missing: run `node_modules/.bin/node scripts/build.ts` first\n');
  process.exit(2);
}
const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  runs: { type: 'string', default: '200' },
  out: { type: 'string', default: join(root, 'bench', 'results', 'shim-startup.json') },
  // Another build of the shim (an older commit's dist/bin/trellis), timed on the same ADD in the
  // same rounds: a before/after that the machine's drift cannot skew.
  other: { type: 'string' },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
const runs = numberArg(SCRIPT, 'runs', opts.runs);
if (!Number.isInteger(runs) || runs < 1) {
  process.stderr.write(`--runs must be a positive integer, not ${opts.runs}\n`);
  process.exit(2);
}

const dir = tempDir('trl-bench-');
const socket = join(dir, 'cni.sock');
const binDir = join(dir, 'bin');
mkdirSync(binDir);
const installed = await installPlugin(binDir, 'trellis', shim);
const evicted = await installPlugin(binDir, 'evicted', shim);
// Drops the file's pages from the page cache (coreutils: iflag=nocache with count=0, the whole file).
execFileSync('dd', [`if=${evicted}`, 'iflag=nocache', 'count=0', 'status=none']);
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
// What containerd sends for a pod: a 64-hex sandbox ID and the pod's identity in CNI_ARGS (the shim's
// request line is ~0.6 KB, as in the cni-latency bench; a short one hid a per-character cost).
const sandboxId = 'd2a3c6f1e0b94c7d8e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819';
const addEnv = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: sandboxId,
  CNI_NETNS: '/var/run/netns/cni-5f3c9a2e-1b7d-4c6a-9e8f-0a1b2c3d4e5f',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-7d9f8c6b5-x2k4p;K8S_POD_INFRA_CONTAINER_ID=${sandboxId};K8S_POD_UID=0b1c2d3e-1111-2222-3333-444455556666`,
  CNI_PATH: '/opt/cni/bin',
};

interface Case {
  name: string;
  bin: string;
  env: Record<string, string>;
}
const cases: Case[] = [
  { name: 'trellis VERSION', bin: installed, env: { CNI_COMMAND: 'VERSION' } },
  { name: 'trellis ADD', bin: installed, env: addEnv },
  { name: 'evicted VERSION', bin: evicted, env: { CNI_COMMAND: 'VERSION' } },
];
if (opts.other !== undefined)
  cases.push({ name: 'other ADD', bin: await installPlugin(binDir, 'other', opts.other), env: addEnv });
const notMeasured: Record<string, string> = {};
if (existsSync(bun)) {
  // The shim's own build flags (scripts/build.ts) on a program that does nothing.
  const src = join(dir, 'floor.ts');
  writeFileSync(src, 'process.exit(0);\n');
  const floor = join(dir, 'floor');
  execFileSync(bun, [...SHIM_COMPILE_FLAGS, src, '--outfile', floor]);
  cases.push({ name: 'bun floor', bin: await installPlugin(binDir, 'floor', floor), env: {} });
} else notMeasured['bun floor'] = `${bun} is missing (npm ci)`;
if (existsSync(ptp))
  cases.push({
    name: 'ptp VERSION',
    bin: await installPlugin(binDir, 'ptp', ptp),
    env: { CNI_COMMAND: 'VERSION' },
  });
else notMeasured['ptp VERSION'] = `${ptp} is missing (apt-get install containernetworking-plugins)`;

function once(c: Case): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(c.bin, [], { env: c.env, stdio: ['pipe', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${c.name} exited ${code}`));
      else resolve(performance.now() - t0);
    });
    child.stdin.on('error', () => {}); // a program that exits without reading stdin
    child.stdin.end(config);
  });
}

const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
try {
  // Warm the page cache (the Bun executables are ~100 MB), then alternate, the order rotating each
  // round: drift hits every case alike, and no case always follows the same one.
  for (const c of cases) for (let i = 0; i < 5; i++) await once(c);
  for (let i = 0; i < runs; i++) {
    for (let k = 0; k < cases.length; k++) {
      const c = cases[(i + k) % cases.length]!;
      times.get(c.name)!.push(await once(c));
    }
  }
} finally {
  server.close();
  rmSync(dir, { recursive: true, force: true });
}

const ptpP50 = median(times.get('ptp VERSION') ?? []);
const summary: Record<string, { runs: number; p50Ms: number; p99Ms: number; vsPtpVersion: number }> = {};
for (const [name, t] of times) {
  summary[name] = {
    runs: t.length,
    p50Ms: round(median(t)),
    p99Ms: round(pct(t, 99)),
    vsPtpVersion: ratio(median(t), ptpP50),
  };
}
const commit = commitId();
process.stdout.write(
  `${table(
    ['command', 'runs', 'p50 ms', 'p99 ms', 'p50 / ptp VERSION'],
    Object.entries(summary).map(([n, s]) => [n, s.runs, s.p50Ms, s.p99Ms, s.vsPtpVersion]),
  )}\n${Object.entries(notMeasured)
    .map(([k, v]) => `${k}: not measured: ${v}\n`)
    .join('')}(spawn to exit, rounds interleaved, commit ${commit})\n`,
);
writeResult(opts.out, 'shim-startup', commit, { runs, spawnToExit: summary, notMeasured });
