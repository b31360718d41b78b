/**
 * Small statistics and reporting helpers shared by the benchmarks: percentiles, medians, ratios,
 * fixed-width tables and the commit a figure was measured on.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { benchChanged, sourceId } from '../../scripts/source-id.ts';

/** Nearest-rank percentile of an unsorted sample (NaN when empty). */
export function pct(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** trellis / reference, rounded; < 1 means trellis is faster (for times). */
export function ratio(trellis: number, reference: number): number {
  return round(trellis / reference, 3);
}

/** Prints rows as a fixed-width table: first column left-aligned, the rest right-aligned. */
export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [header, ...rows].map((r) => r.map((c) => (typeof c === 'number' ? String(c) : c)));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '))
    .join('\n');
}

/**
 * The source of what was measured: the one dist/ was built from (scripts/build.ts stamps it), said
 * against the checkout's when they differ (a result must not name the checkout's source for an
 * older build); "+bench changes" when the benchmark scripts themselves are not committed.
 */
export function commitId(): string {
  const root = new URL('../..', import.meta.url).pathname;
  const checkout = sourceId(root) ?? 'unknown';
  let built: string | undefined;
  try {
    built = (JSON.parse(readFileSync(join(root, 'dist', 'version.json'), 'utf8')) as { commit?: string })
      .commit;
  } catch {
    built = undefined;
  }
  const bench = benchChanged(root) ? ' +bench changes' : '';
  if (built === undefined || built === checkout) return `${checkout}${bench}`;
  process.stderr.write(
    `note: dist/ was built from ${built}, the checkout is at ${checkout}: results name the build\n`,
  );
  return `${built} (checkout ${checkout})${bench}`;
}

export function machine(): { nproc: number; cpu: string; kernel: string } {
  return { nproc: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', kernel: release() };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * How every bench ends: its JSON (name, commit, date, machine, then `fields`) written to `out` and
 * printed as the last line, with `printed` overriding fields in the printed copy only (undefined
 * leaves out a long per-sample series).
 */
export function writeResult(
  out: string,
  bench: string,
  commit: string,
  fields: Record<string, unknown>,
  printed: Record<string, unknown> = {},
): void {
  const json = { bench, commit, date: new Date().toISOString(), machine: machine(), ...fields };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(json)}\n`);
  process.stdout.write(`${JSON.stringify({ ...json, ...printed })}\n`);
}

/**
 * Where a cni-latency result's sequential ADD times start: 'pin' in results since c5154f8
 * (`addTimedFrom`), and from 24b29ea on, which carry `addSpawnedP50` beside them; 'spawn' before.
 */
export function addTimedFrom(result: {
  addTimedFrom?: 'pin';
  summary: Record<string, object>;
}): 'pin' | 'spawn' {
  if (result.addTimedFrom === 'pin') return 'pin';
  return Object.values(result.summary).some((s) => 'addSpawnedP50' in s) ? 'pin' : 'spawn';
}
