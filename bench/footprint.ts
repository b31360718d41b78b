/**
 * Agent footprint at scale: 5,000 Nodes in the test API server (every peer a direct route, masquerade
 * on as deployed) and 100 pods attached through the real shim. Then the agent is left alone and
 * sampled from /proc every few seconds: resident memory (VmRSS), CPU (utime + stime over the window,
 * as % of one core), and the RSS slope (growth). References in the same window, with the launcher's
 * flags and MALLOC_ARENA_MAX: an idle Node 24 process (`setInterval`), the runtime's own floor; and,
 * under the kubelets' status reports, one that only reads the same Node watch (lib/watch-reader.ts):
 * what receiving those events costs the runtime before the agent does anything with them.
 *
 *   node_modules/.bin/node bench/footprint.ts [--minutes 2] [--nodes 5000] [--pods 100] [--out FILE]
 *   node_modules/.bin/node bench/footprint.ts --minutes 10          # the 10-minute growth check
 *   node_modules/.bin/node bench/footprint.ts --metrics-addr ''   # the metrics listener off (default: :9743
 *                                                                 # and scraped every 30 s, as deployed)
 *   node_modules/.bin/node bench/footprint.ts --no-kubelet-status # small Nodes that never change (default:
 *                                                                 # kubelet-sized Nodes, each one's status
 *                                                                 # reported every 5 min: 16.7 events/s at 5,000)
 *   node_modules/.bin/node bench/footprint.ts --json              # the test API server answers the Node list
 *                                                                 # and watch in JSON, not the protobuf the
 *                                                                 # agent asks for
 *
 * Runs inside the node namespace (re-executes itself with `ip netns exec`), like route-convergence.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type AgentProcess, removeAgentDir } from '../test/support/agent-process.ts';
import { startTestApiServer } from '../test/support/apiserver/server.ts';
import { runPlugin, SHIM_BINARY } from '../test/support/cni-driver.ts';
import { NetnsPool } from '../test/support/netns.ts';
import { undoOnSignals } from '../test/support/signal-undo.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { populate, runInsideNamespace, SELF, startClusterAgent, wireNodeNamespace } from './lib/cluster.ts';
import { heartbeat, STATUS_REPORT_SECONDS, withKubeletStatus } from './lib/kubelet-status.ts';
import { CLK_TCK, childCpuTicks, cpuTicks, peakRssBytes, rssBytes, rssParts, slope } from './lib/proc.ts';
import { NODE } from './lib/runner-client.ts';
import { commitId, round, sleep, table, writeResult } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  minutes: { type: 'string', default: '2' },
  json: { type: 'boolean', default: false },
  nodes: { type: 'string', default: '5000' },
  pods: { type: 'string', default: '100' },
  'sample-seconds': { type: 'string', default: '5' },
  // As deployed: the DaemonSet passes ':9743' (and a scraper reads it); '' turns the listener off.
  'metrics-addr': { type: 'string', default: ':9743' },
  // Scrape /metrics this often while metrics are on (Prometheus' default is 60 s, many use 15-30 s).
  'scrape-seconds': { type: 'string', default: '30' },
  // As in a real cluster: Nodes of a kubelet's size, each kubelet's status report every 5 minutes
  // (--no-kubelet-status: the small, silent Nodes of route-convergence).
  'no-kubelet-status': { type: 'boolean', default: false },
  out: { type: 'string', default: join(import.meta.dirname, 'results', 'footprint.json') },
  inner: { type: 'boolean', default: false },
  ns: { type: 'string' },
  'pod-ns': { type: 'string' },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
const NODES = numberArg(SCRIPT, 'nodes', opts.nodes);
const PODS = numberArg(SCRIPT, 'pods', opts.pods, { min: 0 });
const WINDOW_MS = numberArg(SCRIPT, 'minutes', opts.minutes, { min: 0.1, fraction: true }) * 60_000;
const SAMPLE_MS =
  numberArg(SCRIPT, 'sample-seconds', opts['sample-seconds'], { min: 0.1, fraction: true }) * 1000;
const SCRAPE_MS =
  numberArg(SCRIPT, 'scrape-seconds', opts['scrape-seconds'], { min: 0.1, fraction: true }) * 1000;
const KUBELET_STATUS = opts['no-kubelet-status'] !== true;
/** The target's unit: 10^6 bytes (a MiB is 5 % more). */
const MB = 1e6;

if (!opts.inner) {
  // Outer: the namespaces (pod namespaces too: made here, they are visible to the agent's mount namespace).
  const pool = new NetnsPool();
  let code = 1;
  try {
    const node = pool.add('fp');
    const fabric = pool.add('fpf');
    wireNodeNamespace(node.name, fabric.name);
    const pods = Array.from({ length: PODS }, () => pool.add('fpp', { loUp: false }).name);
    code = await runInsideNamespace(node.name, import.meta.filename, [
      ...['--ns', node.name, '--pod-ns', pods.join(',')],
    ]);
  } finally {
    pool.cleanup();
  }
  process.exit(code);
}

const ns = opts.ns!;
const podNs = (opts['pod-ns'] ?? '').split(',').filter((n) => n !== '');
if (!ns.startsWith('trl-') || podNs.some((n) => !n.startsWith('trl-')))
  throw new Error('needs trl- namespaces');

interface Sample {
  tSec: number;
  agentRssMb: number;
  agentTicks: number;
  agentAnonMb: number;
  agentFileMb: number;
  /** CPU of the agent's waited-for children (nft, ip). */
  agentChildTicks: number;
  refRssMb: number;
  refTicks: number;
  /** The watch reader's CPU (0 without kubelet status reports: not started). */
  readerTicks: number;
}

const srv = await startTestApiServer({
  host: '127.0.0.1',
  port: 0,
  historySize: 20_000,
  protobuf: !opts.json,
});
let agent: AgentProcess | undefined;
// The references run as the agent's launcher runs node (dist/bin/trellis-agent): its flags and malloc
// arenas, so their RSS and its growth compare like for like.
const REFERENCE_FLAGS = [
  '--max-semi-space-size=1',
  '--optimize-for-size',
  '--no-opt',
  '--no-maglev',
  '--no-concurrent-sparkplug',
];
const REFERENCE_ENV = { ...process.env, MALLOC_ARENA_MAX: '2' };
const idle = spawn(NODE, [...REFERENCE_FLAGS, '-e', 'setInterval(() => {}, 1000)'], {
  stdio: 'ignore',
  env: REFERENCE_ENV,
});
let reader: ChildProcess | undefined;
let readerEvents: Promise<number> | undefined;
const samples: Sample[] = [];
/** VmHWM read at the window's end (NaN if the run ended before). */
let agentPeakRssMb = Number.NaN;
let heartbeatsSent = 0;
/** Each kubelet's status report, round-robin over the Nodes: NODES per STATUS_REPORT_SECONDS. */
function startHeartbeats(names: readonly string[]): () => number {
  const perTick = names.length / STATUS_REPORT_SECONDS / 10;
  let due = 0;
  let next = 0;
  let sent = 0;
  const timer = setInterval(() => {
    due += perTick;
    const t = new Date().toISOString();
    for (; due >= 1; due--, sent++) {
      srv.store.updateNode(names[next]!, (n) => heartbeat(n, t));
      next = (next + 1) % names.length;
    }
  }, 100);
  return () => {
    clearInterval(timer);
    return sent;
  };
}
let setupMs = 0;
let pods = 0;
let stopHeartbeats = (): number => 0;
try {
  populate(srv, NODES);
  const names = [SELF, ...Array.from({ length: NODES - 1 }, (_, i) => `bench-peer-${i + 1}`)];
  if (KUBELET_STATUS) {
    const t = new Date().toISOString();
    for (const [i, name] of names.entries()) srv.store.updateNode(name, (n) => withKubeletStatus(n, i, t));
  }
  const t0 = Date.now();
  agent = startClusterAgent(ns, srv, ['--log-level', 'info', '--metrics-addr', opts['metrics-addr']!]);
  await agent.ready();
  const pid = agent.child.pid!;
  const cmdline = execFileSync('cat', [`/proc/${pid}/cmdline`], { encoding: 'utf8' });
  if (!cmdline.includes('main.js')) throw new Error(`PID ${pid} is not the agent: ${cmdline}`);
  const socket = agent.socket;
  for (const [i, name] of podNs.entries()) {
    const id = randomBytes(32).toString('hex');
    const podName = `fp-${i}`;
    srv.store.addPod({
      metadata: { namespace: 'bench', name: podName },
      spec: { nodeName: SELF, containers: [{ name: 'c', image: 'pause' }] },
    });
    const r = await runPlugin(
      SHIM_BINARY,
      {
        command: 'ADD',
        containerId: id,
        netns: `/var/run/netns/${name}`,
        ifname: 'eth0',
        args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${podName}`,
      },
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'trellis',
        type: 'trellis',
        socket,
        spoolDir: agent.spoolDir,
      }),
    );
    if (r.code !== 0) throw new Error(`ADD ${i} failed: ${r.stdout} ${r.stderr}`);
    pods++;
  }
  setupMs = Date.now() - t0;
  process.stderr.write(
    `${NODES} nodes, ${pods} pods attached in ${setupMs} ms; sampling for ${opts.minutes} min\n`,
  );
  if (KUBELET_STATUS) {
    const r = spawn(
      NODE,
      [
        ...REFERENCE_FLAGS,
        join(import.meta.dirname, 'lib', 'watch-reader.ts'),
        srv.url,
        'trellis-test-token',
        opts.json === true ? 'json' : 'protobuf',
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: REFERENCE_ENV,
      },
    );
    reader = r;
    readerEvents = new Promise((resolve) => {
      let out = '';
      r.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      r.on('exit', () => resolve(Number.parseInt(out, 10) || 0));
    });
    await sleep(1000); // connected before the first report is sent
    stopHeartbeats = startHeartbeats(names);
  }
  await sleep(5000); // let the start-up garbage settle before the window opens
  const start = Date.now();
  let nextScrape = start;
  while (Date.now() - start <= WINDOW_MS) {
    if (opts['metrics-addr'] !== '' && Date.now() >= nextScrape) {
      nextScrape += SCRAPE_MS;
      const addr = opts['metrics-addr']!;
      const res = await fetch(`http://${addr.startsWith(':') ? `127.0.0.1${addr}` : addr}/metrics`);
      if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
      await res.text();
    }
    const parts = rssParts(pid);
    samples.push({
      tSec: (Date.now() - start) / 1000,
      agentRssMb: rssBytes(pid) / MB,
      agentTicks: cpuTicks(pid),
      agentAnonMb: parts.anonBytes / MB,
      agentFileMb: parts.fileBytes / MB,
      agentChildTicks: childCpuTicks(pid),
      refRssMb: rssBytes(idle.pid!) / MB,
      refTicks: cpuTicks(idle.pid!),
      readerTicks: reader === undefined ? 0 : cpuTicks(reader.pid!),
    });
    await sleep(SAMPLE_MS);
  }
  agentPeakRssMb = peakRssBytes(pid) / MB;
  const routes =
    execFileSync('ip', ['-n', ns, 'route', 'show', 'proto', '126'], { encoding: 'utf8' }).split('\n').length -
    1;
  process.stderr.write(`kernel: ${routes} routes with protocol 126\n`);
} finally {
  heartbeatsSent = stopHeartbeats();
  idle.kill('SIGKILL');
  reader?.kill('SIGTERM');
  if (agent !== undefined) {
    await Promise.race([agent.stop(), sleep(10_000)]);
    await agent.kill();
    removeAgentDir(agent.dir);
  }
  await srv.close();
}

const first = samples[0]!;
const last = samples.at(-1)!;
const windowSec = last.tSec - first.tSec;
const cpuPct = (ticks: number): number => round((ticks / CLK_TCK / windowSec) * 100, 3);
const xsMin = samples.map((s) => s.tSec / 60);
// Growth as a leak shows it: the lowest RSS of each minute (what the garbage collector leaves) rising.
// The overall slope also follows where in its cycle the collector was when the window closed.
const lows = Array.from({ length: Math.floor(windowSec / 60) }, (_, m) =>
  Math.min(...samples.filter((s) => s.tSec >= m * 60 && s.tSec < (m + 1) * 60).map((s) => s.agentRssMb)),
);
const summary = {
  nodes: NODES,
  /** --json: the Node list and watch in JSON, not protobuf. */
  json: opts.json === true,
  pods,
  windowSec: round(windowSec, 1),
  agentRssMb: {
    first: round(first.agentRssMb, 1),
    last: round(last.agentRssMb, 1),
    max: round(Math.max(...samples.map((s) => s.agentRssMb)), 1),
    /** VmHWM at the window's end: the peak since the agent started, the cold pass and the ADDs included. */
    peakSinceStart: round(agentPeakRssMb, 1),
  },
  agentRssSlopeMbPerMin: round(
    slope(
      xsMin,
      samples.map((s) => s.agentRssMb),
    ),
    3,
  ),
  /** The lowest RSS of each whole minute of the window, MB. */
  agentRssMinuteLowsMb: lows.map((v) => round(v, 1)),
  /** Their slope from minute 2 on (the first two still settle), MB/min; null for a window under 4 minutes. */
  agentRssLowsSlopeMbPerMin:
    lows.length < 4
      ? null
      : round(
          slope(
            lows.slice(2).map((_, i) => i + 2),
            lows.slice(2),
          ),
          3,
        ),
  /** Kubelet status reports the Nodes received per second (0: --no-kubelet-status), and how many in all. */
  nodeUpdatesPerSecond: KUBELET_STATUS ? round(NODES / STATUS_REPORT_SECONDS, 1) : 0,
  nodeUpdatesSent: heartbeatsSent,
  agentCpuPctOfCore: cpuPct(last.agentTicks - first.agentTicks),
  /** The agent's waited-for children (nft, ip) over the window: not in agentCpuPctOfCore. */
  agentChildCpuPctOfCore: cpuPct(last.agentChildTicks - first.agentChildTicks),
  /** At the sample of the largest RSS: anonymous memory and file-backed pages. */
  agentRssAtMaxMb: (() => {
    const top = samples.reduce((a, b) => (b.agentRssMb > a.agentRssMb ? b : a));
    return { anon: round(top.agentAnonMb, 1), file: round(top.agentFileMb, 1) };
  })(),
  metricsAddr: opts['metrics-addr'],
  idleNodeRssMb: round(last.refRssMb, 1),
  idleNodeCpuPctOfCore: cpuPct(last.refTicks - first.refTicks),
  /** A Node 24 process reading the same watch, same flags (null without status reports), and the events it read. */
  watchReaderCpuPctOfCore: reader === undefined ? null : cpuPct(last.readerTicks - first.readerTicks),
  watchReaderEvents: readerEvents === undefined ? null : await readerEvents,
  agentRssOverIdleNode: round(last.agentRssMb / last.refRssMb, 2),
};
const commit = commitId();
process.stdout.write(
  `${table(
    ['measure', 'trellis agent', 'idle node 24', 'watch reader'],
    [
      ['RSS at window start, MB', summary.agentRssMb.first, round(first.refRssMb, 1), '-'],
      ['RSS at window end, MB', summary.agentRssMb.last, summary.idleNodeRssMb, '-'],
      ['RSS max, MB', summary.agentRssMb.max, '-', '-'],
      ['RSS peak since start (VmHWM), MB', summary.agentRssMb.peakSinceStart, '-', '-'],
      [
        'RSS slope, MB/min',
        summary.agentRssSlopeMbPerMin,
        round(
          slope(
            xsMin,
            samples.map((s) => s.refRssMb),
          ),
          3,
        ),
        '-',
      ],
      [
        'RSS, lowest of each minute (slope from minute 2), MB',
        `${summary.agentRssMinuteLowsMb.join(' ')} (${summary.agentRssLowsSlopeMbPerMin ?? '-'}/min)`,
        '-',
        '-',
      ],
      [
        `CPU over the window, % of a core (${summary.nodeUpdatesPerSecond} Node updates/s)`,
        summary.agentCpuPctOfCore,
        summary.idleNodeCpuPctOfCore,
        summary.watchReaderCpuPctOfCore ?? '-',
      ],
      ["  its children's (nft, ip), not included", summary.agentChildCpuPctOfCore, '-', '-'],
      [
        'RSS at max: anonymous / file-backed, MB',
        `${summary.agentRssAtMaxMb.anon} / ${summary.agentRssAtMaxMb.file}`,
        '-',
        '-',
      ],
    ],
  )}\n(${NODES} nodes, ${pods} pods, ${round(windowSec)} s window, ${samples.length} samples, metrics ${opts['metrics-addr'] === '' ? 'off' : 'on'}, commit ${commit})\n`,
);
writeResult(
  opts.out,
  'footprint',
  commit,
  {
    summary,
    samples,
  },
  { samples: undefined },
);
