/**
 * Renders bench/cni-add-latency.svg from bench/results/cni-latency.json: the distribution (CDF) of
 * CNI ADD latency, from the pod's namespace pinned (results since 24b29ea; the spawn before) to the plugin's exit, for trellis and each reference plugin, all from the same run.
 * Hand-written SVG, no dependencies.
 *
 *   node_modules/.bin/node bench/chart.ts [--in bench/results/cni-latency.json] [--out bench/cni-add-latency.svg]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchArgs } from './lib/cli.ts';
import { addTimedFrom, pct } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  in: { type: 'string', default: join(import.meta.dirname, 'results', 'cni-latency.json') },
  out: { type: 'string', default: join(import.meta.dirname, 'cni-add-latency.svg') },
});

interface Result {
  commit: string;
  /** 'pin' in results since c5154f8 (addTimedFrom in lib/stats.ts reads older ones). */
  addTimedFrom?: 'pin';
  date: string;
  runs: number;
  pods: number;
  machine: { nproc: number; cpu: string; kernel: string };
  summary: Record<string, { addAll: number[]; addP50: number; addP99: number }>;
}
const r = JSON.parse(readFileSync(opts.in, 'utf8')) as Result;
const fromPin = addTimedFrom(r) === 'pin';

const W = 720;
const H = 420;
const M = { left: 60, right: 170, top: 40, bottom: 50 };
const pw = W - M.left - M.right;
const ph = H - M.top - M.bottom;
const colors: Record<string, string> = {
  trellis: '#1b7f3b',
  ptp: '#1f5fbf',
  bridge: '#c07a00',
  'ptp+ipMasq': '#b3261e',
};
const all = Object.values(r.summary).flatMap((s) => s.addAll);
// Up to the 99th percentile of everything, so one outlier does not flatten the curves.
const tick = [1, 2, 5, 10, 20, 25, 50, 100, 200, 500].find((t) => t * 5 >= pct(all, 99)) ?? 1000;
const xMax = tick * 5;
const x = (ms: number): number => M.left + (Math.min(ms, xMax) / xMax) * pw;
const y = (f: number): number => M.top + (1 - f) * ph;
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

const parts: string[] = [];
parts.push(
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  `<title>CNI ADD latency distribution: trellis and the reference plugins, commit ${esc(r.commit)}</title>`,
  `<rect width="${W}" height="${H}" fill="white"/>`,
  `<text x="${M.left}" y="22" font-size="14" font-weight="bold">CNI ADD latency, ${fromPin ? "pod's namespace pinned" : 'spawn'} to exit (CDF)</text>`,
);
for (let i = 0; i <= 5; i++) {
  const ms = (xMax / 5) * i;
  parts.push(
    `<line x1="${x(ms)}" y1="${M.top}" x2="${x(ms)}" y2="${M.top + ph}" stroke="#eee"/>`,
    `<text x="${x(ms)}" y="${M.top + ph + 16}" text-anchor="middle">${Math.round(ms)}</text>`,
  );
}
for (const f of [0, 0.25, 0.5, 0.75, 0.99, 1]) {
  parts.push(
    `<line x1="${M.left}" y1="${y(f)}" x2="${M.left + pw}" y2="${y(f)}" stroke="${f === 0.5 || f === 0.99 ? '#ccc' : '#eee'}"/>`,
    `<text x="${M.left - 6}" y="${y(f) + 4}" text-anchor="end">${f === 0.99 ? 'p99' : f === 0.5 ? 'p50' : f}</text>`,
  );
}
parts.push(
  `<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
  `<text x="${M.left + pw / 2}" y="${H - 12}" text-anchor="middle">milliseconds (axis ends at ${xMax} ms, the first tick above the overall p99)</text>`,
);
let legendY = M.top + 10;
for (const [name, s] of Object.entries(r.summary)) {
  const sorted = [...s.addAll].sort((a, b) => a - b);
  const color = colors[name] ?? '#555';
  const pts = sorted.map((v, i) => `${x(v).toFixed(1)},${y((i + 1) / sorted.length).toFixed(1)}`);
  parts.push(
    `<polyline fill="none" stroke="${color}" stroke-width="${name === 'trellis' ? 2.5 : 1.5}" points="${x(0)},${y(0)} ${pts.join(' ')}"/>`,
    `<line x1="${M.left + pw + 12}" y1="${legendY}" x2="${M.left + pw + 32}" y2="${legendY}" stroke="${color}" stroke-width="3"/>`,
    `<text x="${M.left + pw + 38}" y="${legendY + 4}">${esc(name)}</text>`,
    `<text x="${M.left + pw + 38}" y="${legendY + 18}" fill="#555" font-size="11">median of run p50s ${s.addP50} / p99 ${s.addP99} ms</text>`,
  );
  legendY += 40;
}
parts.push(
  `<text x="${M.left + pw + 12}" y="${M.top + ph - 4}" fill="#777" font-size="10">${r.runs} runs x ${r.pods} pods</text>`,
  `<text x="${M.left + pw + 12}" y="${M.top + ph + 10}" fill="#777" font-size="10">commit ${esc(r.commit)}</text>`,
  `<text x="${M.left + pw + 12}" y="${M.top + ph + 24}" fill="#777" font-size="10">${r.machine.nproc} vCPU, ${esc(r.machine.cpu)}</text>`,
  '</svg>',
);
writeFileSync(opts.out, `${parts.join('\n')}\n`);
process.stdout.write(`${opts.out}\n`);
