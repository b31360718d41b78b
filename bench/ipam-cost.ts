/**
 * What one durable IPAM allocate and release cost on this disk, fsyncs included: a dual-stack node
 * holding 110 pods, then ROUNDS pods started and deleted one after the other; and opening the store
 * of an empty state directory. Absolute times (there is no reference plugin to compare an in-process
 * IPAM with; host-local's whole process is in cni-latency.ts); they depend on the disk and on what
 * else runs.
 *
 *   node_modules/.bin/node bench/ipam-cost.ts [--rounds 200] [--out bench/results/ipam-cost.json]
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { openIpam } from '../pkg/ipam/index.ts';
import { tempDir, undoOnSignals } from '../test/support/signal-undo.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { commitId, median, pct, round, table, writeResult } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  rounds: { type: 'string', default: '200' },
  out: { type: 'string', default: join(import.meta.dirname, 'results', 'ipam-cost.json') },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
const ROUNDS = numberArg(SCRIPT, 'rounds', opts.rounds);
const RANGES = ['10.244.0.0/24', 'fd00:10:244::/64'];

const dirs: string[] = [];
const dir = (): string => {
  const d = tempDir('trl-bench-ipam-');
  dirs.push(d);
  return d;
};

const alloc: number[] = [];
const release: number[] = [];
let openEmpty: number;
try {
  const ipam = openIpam({ dir: dir(), ranges: RANGES });
  for (let i = 0; i < 110; i++) ipam.allocate({ containerId: `base${i}`, ifname: 'eth0' });
  for (let round = 0; round < ROUNDS; round++) {
    const key = { containerId: `churn${round}`, ifname: 'eth0' };
    let t = performance.now();
    ipam.allocate(key, { podNamespace: 'default', podName: `p${round}`, netns: '/var/run/netns/cni-x' });
    alloc.push(performance.now() - t);
    t = performance.now();
    ipam.release(key);
    release.push(performance.now() - t);
  }
  if (ipam.list().length !== 110) throw new Error(`${ipam.list().length} leases left, not 110`);
  const t = performance.now();
  openIpam({ dir: dir(), ranges: RANGES });
  openEmpty = performance.now() - t;
} finally {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

const row = (name: string, v: number[]) => [
  name,
  round(median(v), 3),
  round(pct(v, 90), 3),
  round(pct(v, 99), 3),
];
const commit = commitId();
process.stdout.write(
  `${table(['call', 'p50 ms', 'p90 ms', 'p99 ms'], [row('allocate', alloc), row('release', release)])}\n\nopen (empty directory): ${round(openEmpty, 3)} ms (commit ${commit}, ${ROUNDS} rounds, 110 pods held)\n`,
);
writeResult(opts.out, 'ipam-cost', commit, {
  rounds: ROUNDS,
  allocateMs: { p50: round(median(alloc), 3), p90: round(pct(alloc, 90), 3), p99: round(pct(alloc, 99), 3) },
  releaseMs: {
    p50: round(median(release), 3),
    p90: round(pct(release, 90), 3),
    p99: round(pct(release, 99), 3),
  },
  openEmptyMs: round(openEmpty, 3),
});
