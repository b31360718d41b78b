/**
 * Soak: N pod lifecycles (fresh netns -> ADD -> check -> DEL -> netns removed) at a fixed concurrency
 * through the shipped shim (dist/bin/trellis) against a real agent, in test namespaces. Asserts as it
 * goes and reports at the end:
 *   - duplicates: an ADD answered with an address another live pod holds (tracked at every moment:
 *     an address is live from its ADD's answer until its DEL is sent, while the agent still holds it);
 *   - leaks at the end: leases and reservations on disk, host veths, protocol-126 routes, spool files;
 *   - the agent's RSS sampled over time, with the least-squares slope (whole run and second half);
 *   - connectivity: every `--ping-every`th pod (default 25, 0 for none) is pinged from the node before its DEL.
 *
 *   node_modules/.bin/node scripts/build.ts
 *   node_modules/.bin/node bench/soak.ts [--cycles 2000] [--concurrency 16] [--sample-ms 500]
 *     [--ping-every 25] [--out FILE]
 *
 * Prints a table and, last, one JSON line (also written to --out, default bench/results/soak.json).
 * The reliability suite runs a short version (test/integration/reliability/soak.test.ts).
 */
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AddResult, containerId, NodeHarness, podAddr } from '../test/integration/datapath/harness.ts';
import { agentPid, holdings, type NodeHoldings, rssKiB } from '../test/integration/reliability/support.ts';
import { type CniCall, type PluginRun, runPlugin, SHIM_BINARY } from '../test/support/cni-driver.ts';
import { delNetns, nsPing } from '../test/support/netns.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { commitId, machine, pct, round, table } from './lib/stats.ts';

export interface SoakOptions {
  cycles: number;
  concurrency: number;
  /** RSS sampling period. Default 500 ms. */
  sampleMs?: number;
  /** Ping every Nth pod from the node before its DEL (0 = never). Default 25. */
  pingEvery?: number;
  onProgress?: (done: number) => void;
  /**
   * The shim binary to run; default dist/bin/trellis. The CLI runs a private copy so that a rebuild
   * of dist/ during a long soak (which deletes it for a moment) is not counted as failed calls.
   */
  shim?: string;
}

export interface RssSample {
  tMs: number;
  rssKiB: number;
}

export interface SoakReport {
  commit: string;
  machine: ReturnType<typeof machine>;
  cycles: number;
  concurrency: number;
  durationS: number;
  cyclesPerS: number;
  addMs: { p50: number; p99: number; max: number };
  delMs: { p50: number; p99: number; max: number };
  failures: number;
  delRetries: number;
  failureSamples: string[];
  duplicates: number;
  duplicateSamples: string[];
  pings: number;
  pingFailures: number;
  maxLive: number;
  /** What the node still held after the last DEL (all empty = no leak). */
  leftovers: NodeHoldings;
  leaks: number;
  rss: {
    startKiB: number;
    endKiB: number;
    maxKiB: number;
    slopeKiBPerMin: number;
    secondHalfSlopeKiBPerMin: number;
    /** RSS at 0, 25, 50, 75 and 100 % of the run: a plateau shows as flat later quarters. */
    quartersKiB: number[];
    samples: number;
  };
}

/** A copy of dist/bin/trellis in a temp dir, safe from concurrent rebuilds of dist/. */
export function privateShimCopy(): { path: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'trl-soak-'));
  const path = join(dir, 'trellis');
  copyFileSync(SHIM_BINARY, path);
  chmodSync(path, 0o755);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Least-squares slope of rss over time, KiB per minute. */
export function slopePerMin(samples: readonly RssSample[]): number {
  if (samples.length < 2) return 0;
  const n = samples.length;
  const mx = samples.reduce((s, p) => s + p.tMs, 0) / n;
  const my = samples.reduce((s, p) => s + p.rssKiB, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of samples) {
    num += (p.tMs - mx) * (p.rssKiB - my);
    den += (p.tMs - mx) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 60_000;
}

const stats = (v: number[]) => ({
  p50: round(pct(v, 50)),
  p99: round(pct(v, 99)),
  max: round(Math.max(0, ...v)),
});

/** Runs the soak against a started NodeHarness (the caller starts and stops it). */
export async function runSoak(node: NodeHarness, opts: SoakOptions): Promise<SoakReport> {
  const pid = agentPid(node);
  const pingEvery = opts.pingEvery ?? 25;
  const shim = opts.shim ?? SHIM_BINARY;
  const call = (c: CniCall): Promise<PluginRun> =>
    runPlugin(shim, { hostNetns: node.host.name, ...c }, JSON.stringify(node.conf()));
  const add = (ns: { path: string }, id: string): Promise<PluginRun> =>
    call({
      command: 'ADD',
      containerId: id,
      netns: ns.path,
      ifname: 'eth0',
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=soak;K8S_POD_NAME=${id.slice(0, 12)}`,
    });
  let delRetries = 0;
  /** DEL as a runtime does it: retried until it succeeds (a failure is counted once). */
  const del = async (id: string, ns: { path: string }, what: string): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      const r = await call({ command: 'DEL', containerId: id, netns: ns.path, ifname: 'eth0' });
      if (r.code === 0) return;
      if (attempt === 0) fail(`${what}: ${r.stdout.trim()} ${r.stderr.trim()}`);
      delRetries++;
      if (attempt >= 50) return;
      await new Promise((res) => setTimeout(res, 200));
    }
  };
  const live = new Map<string, string>();
  const addMs: number[] = [];
  const delMs: number[] = [];
  const failureSamples: string[] = [];
  const duplicateSamples: string[] = [];
  let failures = 0;
  let duplicates = 0;
  let pings = 0;
  let pingFailures = 0;
  let maxLive = 0;
  let next = 0;
  let done = 0;

  const started = performance.now();
  const samples: RssSample[] = [{ tMs: 0, rssKiB: rssKiB(pid) }];
  const sampler = setInterval(() => {
    samples.push({ tMs: performance.now() - started, rssKiB: rssKiB(pid) });
  }, opts.sampleMs ?? 500);

  const fail = (what: string): void => {
    failures++;
    if (failureSamples.length < 5) failureSamples.push(what);
  };

  interface LivePod {
    i: number;
    id: string;
    ns: { name: string; path: string };
    addrs: string[];
  }

  /** ADD one pod; undefined when it failed (then DEL'd and removed, as a runtime does). */
  async function addPod(i: number): Promise<LivePod | undefined> {
    const ns = node.podNs();
    const id = containerId();
    const t0 = performance.now();
    const run = await add(ns, id);
    addMs.push(performance.now() - t0);
    if (run.code !== 0) {
      fail(`ADD ${i}: ${run.stdout.trim()} ${run.stderr.trim()}`);
      await del(id, ns, `DEL after failed ADD ${i}`);
      delNetns(ns.name);
      done++;
      return undefined;
    }
    const res = run.json as AddResult;
    const addrs = [podAddr(res, 4), podAddr(res, 6)];
    for (const a of addrs) {
      const holder = live.get(a);
      if (holder !== undefined) {
        duplicates++;
        if (duplicateSamples.length < 5) {
          duplicateSamples.push(`${a} given to ${id.slice(0, 12)} while ${holder.slice(0, 12)} holds it`);
        }
      }
      live.set(a, id);
    }
    maxLive = Math.max(maxLive, live.size / 2);
    return { i, id, ns, addrs };
  }

  async function delPod(pod: LivePod): Promise<void> {
    if (pingEvery > 0 && pod.i % pingEvery === 0) {
      pings++;
      if (!nsPing(node.host.name, pod.addrs[0]!)) pingFailures++;
    }
    // No longer ours from the moment DEL is sent (the agent holds it until DEL releases it).
    for (const a of pod.addrs) if (live.get(a) === pod.id) live.delete(a);
    const t1 = performance.now();
    await del(pod.id, pod.ns, `DEL ${pod.i}`);
    delMs.push(performance.now() - t1);
    delNetns(pod.ns.name);
    done++;
    opts.onProgress?.(done);
  }

  // Each worker keeps its previous pod alive while it adds the next one, so about one pod per worker is live at
  // every moment and each ADD's address is checked against all of them.
  const workers = Array.from({ length: opts.concurrency }, async () => {
    let previous: LivePod | undefined;
    for (let i = next++; i < opts.cycles; i = next++) {
      const pod = await addPod(i);
      if (previous !== undefined) await delPod(previous);
      previous = pod;
    }
    if (previous !== undefined) await delPod(previous);
  });
  try {
    await Promise.all(workers);
  } finally {
    clearInterval(sampler);
  }
  const durationMs = performance.now() - started;
  samples.push({ tMs: durationMs, rssKiB: rssKiB(pid) });

  // Veth deletion runs right after DEL answers; give it a moment before counting leftovers.
  await node.waitForVeths(0, 15_000);
  const leftovers = holdings(node);
  const leaks =
    leftovers.leases.length +
    leftovers.reservations.length +
    leftovers.veths.length +
    leftovers.routes.length +
    leftovers.spool.length +
    leftovers.quarantine.length;
  const half = samples.filter((s) => s.tMs >= durationMs / 2);
  return {
    commit: commitId(),
    machine: machine(),
    cycles: opts.cycles,
    concurrency: opts.concurrency,
    durationS: round(durationMs / 1000),
    cyclesPerS: round(opts.cycles / (durationMs / 1000)),
    addMs: stats(addMs),
    delMs: stats(delMs),
    failures,
    delRetries,
    failureSamples,
    duplicates,
    duplicateSamples,
    pings,
    pingFailures,
    maxLive,
    leftovers,
    leaks,
    rss: {
      startKiB: samples[0]!.rssKiB,
      endKiB: samples.at(-1)!.rssKiB,
      maxKiB: Math.max(...samples.map((s) => s.rssKiB)),
      slopeKiBPerMin: round(slopePerMin(samples)),
      secondHalfSlopeKiBPerMin: round(slopePerMin(half)),
      quartersKiB: [0, 0.25, 0.5, 0.75, 1].map(
        (q) => samples[Math.min(samples.length - 1, Math.round(q * (samples.length - 1)))]!.rssKiB,
      ),
      samples: samples.length,
    },
  };
}

export function formatReport(r: SoakReport): string {
  return table(
    ['metric', 'value'],
    [
      ['commit', r.commit],
      ['cycles x concurrency', `${r.cycles} x ${r.concurrency}`],
      ['duration', `${r.durationS} s (${r.cyclesPerS} cycles/s)`],
      ['ADD ms p50 / p99 / max', `${r.addMs.p50} / ${r.addMs.p99} / ${r.addMs.max}`],
      ['DEL ms p50 / p99 / max', `${r.delMs.p50} / ${r.delMs.p99} / ${r.delMs.max}`],
      ['failed calls (DEL retries)', `${r.failures} (${r.delRetries})`],
      ['duplicate addresses', r.duplicates],
      ['pings ok', `${r.pings - r.pingFailures} / ${r.pings}`],
      ['max live pods', r.maxLive],
      ['leftovers (leases, addrs, veths, routes, spool, quarantine)', r.leaks],
      [
        'agent RSS start / end / max (MiB)',
        `${round(r.rss.startKiB / 1024)} / ${round(r.rss.endKiB / 1024)} / ${round(r.rss.maxKiB / 1024)}`,
      ],
      ['RSS slope KiB/min (all / 2nd half)', `${r.rss.slopeKiBPerMin} / ${r.rss.secondHalfSlopeKiBPerMin}`],
      ['RSS at 0/25/50/75/100 % (MiB)', r.rss.quartersKiB.map((k) => round(k / 1024, 1)).join(' / ')],
    ],
  );
}

async function main(): Promise<void> {
  const script = import.meta.filename;
  const values = benchArgs(script, {
    cycles: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
    'sample-ms': { type: 'string', default: '500' },
    'ping-every': { type: 'string', default: '25' },
    out: { type: 'string', default: join(import.meta.dirname, 'results', 'soak.json') },
  });
  const cycles = numberArg(script, 'cycles', values.cycles);
  const concurrency = numberArg(script, 'concurrency', values.concurrency);
  const sampleMs = numberArg(script, 'sample-ms', values['sample-ms']);
  const pingEvery = numberArg(script, 'ping-every', values['ping-every'], { min: 0 });
  const shim = privateShimCopy();
  const node = new NodeHarness();
  const stop = (): void => {
    void node.stop().finally(() => {
      shim.remove();
      process.exit(130);
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.once('SIGHUP', stop); // a closed terminal or ssh session
  let report: SoakReport;
  try {
    await node.start(); // inside the try: an agent that fails to start still has its namespace removed
    let lastPrint = 0;
    report = await runSoak(node, {
      cycles,
      concurrency,
      sampleMs,
      pingEvery,
      shim: shim.path,
      onProgress: (n) => {
        if (n - lastPrint >= Math.max(1, Math.floor(cycles / 10))) {
          lastPrint = n;
          process.stderr.write(`soak: ${n}/${cycles}\n`);
        }
      },
    });
  } finally {
    await node.stop();
    shim.remove();
  }
  process.stdout.write(`${formatReport(report)}\n`);
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exitCode = report.duplicates === 0 && report.leaks === 0 && report.failures === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
