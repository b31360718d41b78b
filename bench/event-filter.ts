/**
 * What the kernel notifications of pod ADDs and DELs cost the agent's JS thread, with and without
 * the socket filter the agent attaches to its watch (pkg/agent/kernel-watch.ts WATCHED_ROUTES and
 * WATCHED_LINKS). The same subscriptions as the agent's, in a node namespace; `ip -batch` does what
 * an ADD and a DEL do to the host side there (a veth whose peer goes into a pod namespace, both
 * ends up, the host end's 169.254.1.1, the pod's /32 route with trellis's protocol; then the
 * deletion). Rounds alternate between filtered and unfiltered; this process's CPU time (user +
 * system) from the batch's start until the notifications are drained, per pod, medians.
 *
 * Run with the agent's V8 flags, as the agent runs:
 *   node_modules/.bin/node --no-opt --no-maglev bench/event-filter.ts [--pods 200] [--reps 7]
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WATCHED_LINKS, WATCHED_ROUTES } from '../pkg/agent/kernel-watch.ts';
import { TRELLIS_ROUTE_PROTOCOL } from '../pkg/datapath/ports.ts';
import { createNetlinkEvents, withNetns } from '../pkg/netns/index.ts';
import { NetnsPool } from '../test/support/netns.ts';
import { tempDir, undoOnSignals } from '../test/support/signal-undo.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { commitId, median, ratio, round, sleep, table, writeResult } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  pods: { type: 'string', default: '200' },
  reps: { type: 'string', default: '7' },
  out: { type: 'string', default: join(import.meta.dirname, 'results', 'event-filter.json') },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
const PODS = numberArg(SCRIPT, 'pods', opts.pods);
const REPS = numberArg(SCRIPT, 'reps', opts.reps);

const pool = new NetnsPool();
const tmp = tempDir('trl-bench-events-');
const rows = {
  unfiltered: { cpu: [] as number[], events: [] as number[] },
  filtered: { cpu: [] as number[], events: [] as number[] },
};
try {
  const node = pool.add('en');
  const pod = pool.add('ep');
  const batch = join(tmp, 'batch');
  const lines: string[] = [];
  for (let i = 0; i < PODS; i++) {
    const host = `trl${i}`;
    lines.push(
      `link add ${host} type veth peer name p${i} netns ${pod.name}`,
      `link set ${host} up`,
      `addr add 169.254.1.1/32 dev ${host} scope link`,
      `route add 10.244.${i >> 8}.${i & 255}/32 dev ${host} scope link proto ${TRELLIS_ROUTE_PROTOCOL}`,
    );
  }
  for (let i = 0; i < PODS; i++) lines.push(`link del trl${i}`);
  writeFileSync(batch, `${lines.join('\n')}\n`);

  for (let rep = 0; rep < REPS; rep++) {
    const order =
      rep % 2 === 0 ? (['unfiltered', 'filtered'] as const) : (['filtered', 'unfiltered'] as const);
    for (const variant of order) {
      let events = 0;
      let last = performance.now();
      const count = (): void => {
        events++;
        last = performance.now();
      };
      const filtered = variant === 'filtered';
      const subs = withNetns(node.path, () => {
        const e = createNetlinkEvents();
        return [
          e.subscribeRouteEvents(count, filtered ? WATCHED_ROUTES : undefined),
          e.subscribeLinkEvents(count, filtered ? WATCHED_LINKS : undefined),
        ];
      });
      try {
        const c0 = process.cpuUsage();
        execFileSync('ip', ['-n', node.name, '-batch', batch]);
        last = performance.now();
        // Drained: nothing new for 200 ms (the batch is done, its notifications are queued).
        while (performance.now() - last < 200) await sleep(50);
        const c = process.cpuUsage(c0);
        rows[variant].cpu.push((c.user + c.system) / 1000 / PODS);
        rows[variant].events.push(events / PODS);
      } finally {
        for (const s of subs) s.close();
      }
    }
  }
} finally {
  pool.cleanup();
  rmSync(tmp, { recursive: true, force: true });
}

const summary = Object.fromEntries(
  Object.entries(rows).map(([k, v]) => [
    k,
    { eventsPerPod: round(median(v.events)), cpuMsPerPod: round(median(v.cpu), 3) },
  ]),
) as Record<keyof typeof rows, { eventsPerPod: number; cpuMsPerPod: number }>;
const commit = commitId();
process.stdout.write(
  `${table(
    ['watch', 'notifications per pod (ADD + DEL)', 'CPU ms per pod'],
    Object.entries(summary).map(([k, v]) => [k, v.eventsPerPod, v.cpuMsPerPod]),
  )}\n\nfiltered / unfiltered CPU: ${ratio(summary.filtered.cpuMsPerPod, summary.unfiltered.cpuMsPerPod)} (commit ${commit}, ${REPS} reps x ${PODS} pods, V8 flags: ${process.execArgv.join(' ') || 'none'})\n`,
);
writeResult(opts.out, 'event-filter', commit, {
  pods: PODS,
  reps: REPS,
  v8Flags: process.execArgv,
  summary,
  ratio: ratio(summary.filtered.cpuMsPerPod, summary.unfiltered.cpuMsPerPod),
});
