/**
 * ADD latency percentiles over the pooled samples of several cni-latency.ts runs (the sweep's three:
 * 600 ADDs per plugin instead of 200). A run's p99 rests on its third-slowest ADD, so it moves with
 * one or two stragglers; the pooled tail is the steadier figure. The per-run ratios stay the ones
 * to compare run by run: pooling mixes hours whose machine load differed, for every plugin alike.
 *
 *   node_modules/.bin/node bench/pooled.ts [--in FILE ...] [--out FILE]
 *
 * Default inputs: bench/results/cni-latency.json, -2.json and -3.json. Prints a table and, last, one
 * JSON line (also written to --out, default bench/results/cni-latency-pooled.json). No assertions.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchArgs } from './lib/cli.ts';
import { addTimedFrom, pct, ratio, round, table, writeResult } from './lib/stats.ts';

const results = join(import.meta.dirname, 'results');
const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  in: {
    type: 'string',
    multiple: true,
    default: ['cni-latency.json', 'cni-latency-2.json', 'cni-latency-3.json'].map((f) => join(results, f)),
  },
  out: { type: 'string', default: join(results, 'cni-latency-pooled.json') },
});

interface Run {
  commit: string;
  /** 'pin' in results since c5154f8; absent before (and from 24b29ea on, addSpawnedP50 marks pin timing). */
  addTimedFrom?: 'pin';
  summary: Record<string, { addAll: number[] }>;
}
const runs = opts.in.map((file) => JSON.parse(readFileSync(file, 'utf8')) as Run);
// ADDs timed from the pin carry ~0.6 ms more than ones timed from the spawn: never pooled together.
const timings = [...new Set(runs.map(addTimedFrom))];
if (timings.length > 1) {
  process.stderr.write(
    `the inputs time ADDs from different starts (${timings.join(', ')}): pool runs of one kind only\n`,
  );
  process.exit(2);
}
const startedAt = timings[0] === 'pin' ? "pod's namespace pinned" : 'spawn';
const commits = [...new Set(runs.map((r) => r.commit))];
// Only plugins every run measured: a plugin missing from one run would be pooled over fewer hours.
const plugins = Object.keys(runs[0]?.summary ?? {}).filter((p) =>
  runs.every((r) => r.summary[p] !== undefined),
);
if (!plugins.includes('trellis')) {
  process.stderr.write(`no trellis samples in every one of ${opts.in.join(', ')}\n`);
  process.exit(2);
}

const PERCENTILES = [50, 95, 99] as const;
const summary: Record<string, { adds: number; p50Ms: number; p95Ms: number; p99Ms: number }> = {};
for (const p of plugins) {
  const all = runs.flatMap((r) => r.summary[p]!.addAll);
  const [p50, p95, p99] = PERCENTILES.map((q) => round(pct(all, q)));
  summary[p] = { adds: all.length, p50Ms: p50!, p95Ms: p95!, p99Ms: p99! };
}
const trellis = summary.trellis!;
const ratios: Record<string, { p50: number; p95: number; p99: number }> = {};
for (const p of plugins.filter((name) => name !== 'trellis')) {
  const ref = summary[p]!;
  ratios[p] = {
    p50: ratio(trellis.p50Ms, ref.p50Ms),
    p95: ratio(trellis.p95Ms, ref.p95Ms),
    p99: ratio(trellis.p99Ms, ref.p99Ms),
  };
}

process.stdout.write(
  `${table(
    ['plugin', 'ADDs', 'p50 ms', 'p95 ms', 'p99 ms'],
    plugins.map((p) => [p, summary[p]!.adds, summary[p]!.p50Ms, summary[p]!.p95Ms, summary[p]!.p99Ms]),
  )}\n\n${table(
    ['trellis / ref', 'p50', 'p95', 'p99'],
    Object.entries(ratios).map(([p, r]) => [p, r.p50, r.p95, r.p99]),
  )}\n(ADD from ${startedAt} to exit, pooled over ${runs.length} runs, commit ${commits.join(', ')})\n`,
);
writeResult(opts.out, 'cni-latency-pooled', commits.join(','), {
  addTimedFrom: timings[0],
  runs: runs.length,
  summary,
  ratios,
});
