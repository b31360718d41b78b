/**
 * Every benchmark, one after the other, the way the latest figures in bench/README.md were taken:
 * three runs of the latency bench and two of the datapath interleaved with the others, one of each
 * other script, the 10-minute footprint check and the 2-minute one, the chart, the ADD percentiles
 * pooled over the three latency runs, then a datapath run of 9 repetitions. Each script
 * writes the result file bench/README.md names; nothing else should run on the machine meanwhile
 * (~40 min on the slower test VM). Stops at the first script that fails.
 *
 *   node_modules/.bin/node scripts/build.ts
 *   node_modules/.bin/node bench/sweep.ts [--out-dir DIR] [--only SCRIPT,...] [--from N]
 *
 * --out-dir: where the result files go (default bench/results; the chart goes there too when it is
 * given, else to bench/). --only: just these scripts' steps, in the sweep's order (e.g.
 * `--only datapath.ts,chart.ts`). --from: start at step N of those (the number each step prints), to
 * resume a sweep that stopped.
 */
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { forwardSignalsTo } from '../test/support/signal-undo.ts';
import { benchArgs } from './lib/cli.ts';

const opts = benchArgs(import.meta.filename, {
  'out-dir': { type: 'string' },
  only: { type: 'string' },
  from: { type: 'string' },
});
const bench = import.meta.dirname;
const outDir = opts['out-dir'] ?? join(bench, 'results');
const chart =
  opts['out-dir'] === undefined ? join(bench, 'cni-add-latency.svg') : join(outDir, 'cni-add-latency.svg');

interface Step {
  script: string;
  args: string[];
  /** Node flags before the script (event-filter measures under the agent's V8 flags). */
  nodeFlags?: string[];
}
const out = (file: string): string[] => ['--out', join(outDir, file)];
const STEPS: Step[] = [
  { script: 'cni-latency.ts', args: out('cni-latency.json') },
  { script: 'shim-startup.ts', args: ['--runs', '300', ...out('shim-startup.json')] },
  // 100 Node events each way per repetition: the masquerade run's p99 then rests on 100 samples, not 50.
  { script: 'route-convergence.ts', args: ['--events', '100', ...out('route-convergence.json')] },
  { script: 'cni-latency.ts', args: out('cni-latency-2.json') },
  { script: 'datapath.ts', args: out('datapath.json') },
  { script: 'event-filter.ts', args: out('event-filter.json'), nodeFlags: ['--no-opt', '--no-maglev'] },
  { script: 'cni-latency.ts', args: out('cni-latency-3.json') },
  { script: 'datapath.ts', args: out('datapath-repeat.json') },
  { script: 'footprint.ts', args: ['--minutes', '10', ...out('footprint-10min.json')] },
  { script: 'footprint.ts', args: out('footprint.json') },
  // The small Nodes that never change of the sweeps before kubelet-sized Nodes and their status reports.
  { script: 'footprint.ts', args: ['--no-kubelet-status', ...out('footprint-small-nodes.json')] },
  { script: 'chart.ts', args: ['--in', join(outDir, 'cni-latency.json'), '--out', chart] },
  {
    script: 'pooled.ts',
    args: [
      ...['cni-latency.json', 'cni-latency-2.json', 'cni-latency-3.json'].flatMap((f) => [
        '--in',
        join(outDir, f),
      ]),
      ...out('cni-latency-pooled.json'),
    ],
  },
  // A 3-repetition datapath run moves by ±5 % on the test VM: 9 repetitions give the median that moves least.
  { script: 'datapath.ts', args: ['--reps', '9', ...out('datapath-9reps.json')] },
];

const only = opts.only?.split(',').map((s) => s.trim());
const unknown = only?.filter((name) => !STEPS.some((step) => step.script === name)) ?? [];
if (unknown.length > 0) {
  process.stderr.write(
    `--only: no step runs ${unknown.join(', ')} (scripts: ${[...new Set(STEPS.map((s) => s.script))].join(', ')})\n`,
  );
  process.exit(2);
}
const selected = only === undefined ? STEPS : STEPS.filter((step) => only.includes(step.script));
const from = opts.from === undefined ? 1 : Number(opts.from);
if (!Number.isInteger(from) || from < 1 || from > selected.length) {
  process.stderr.write(`--from must be a step number from 1 to ${selected.length}, not ${opts.from}\n`);
  process.exit(2);
}
const steps = selected.slice(from - 1);
// A sweep takes most of an hour: what a step needs is checked before the first one starts, not when
// that step comes (datapath.ts, the fifth, needs iperf3, which the tests do not).
if (
  steps.some((step) => step.script === 'datapath.ts') &&
  spawnSync('iperf3', ['--version']).error !== undefined
) {
  process.stderr.write('the datapath steps need iperf3 (apt-get install iperf3), which is not on PATH\n');
  process.exit(2);
}

const started = new Date();
process.stdout.write(`sweep started ${started.toISOString()}, results in ${outDir}\n`);
for (const [i, step] of steps.entries()) {
  process.stdout.write(`\n== ${i + from}/${selected.length} ${step.script} ${step.args.join(' ')}\n`);
  const child = spawn(process.execPath, [...(step.nodeFlags ?? []), join(bench, step.script), ...step.args], {
    stdio: 'inherit',
  });
  // A signal to the sweep alone (a job's timeout, `kill`) reaches the running step, which undoes what
  // it made; the sweep then stops here rather than leave the step running on its own.
  forwardSignalsTo(child);
  const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('exit', (code, sig) => resolve([code, sig])),
  );
  if (status !== 0) {
    process.stderr.write(`${step.script} failed (${signal ?? `exit ${status}`}): sweep stopped\n`);
    process.exit(status === null || status < 128 ? 1 : status);
  }
}
process.stdout.write(
  `\nsweep done ${new Date().toISOString()} (${Math.round((Date.now() - started.getTime()) / 60_000)} min)\n`,
);
