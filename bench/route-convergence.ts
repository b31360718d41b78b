/**
 * Route convergence at scale: a test API server holding N nodes (default 5,000), one real agent in
 * Kubernetes mode in a node namespace whose eth0 holds a /16 that every peer's InternalIP sits on
 * (so all N-1 peers are direct routes).
 *
 * - Cold convergence: from the agent's first full list of Nodes (the moment the server had sent the
 *   list's last page: everything the agent does with the list counts, reading and decoding that page
 *   included) to the last of the N-1 peer routes appearing in the kernel (`ip -ts monitor route`
 *   timestamps). Also reported from the agent's watch request, which the informer sends only after it
 *   has turned the list into its cache and started the pass (what earlier runs reported). Reference, same run
 *   and interleaved: `ip -batch` adding the same routes in a fresh namespace, spawn to exit, as
 *   plain `via` routes (the issue's reference) and as the nexthop objects plus routes naming them
 *   that trellis writes. The first list's time is split, from the test API server's records, into
 *   the server's time on each page and its time waiting for the agent's next request (ListSplit).
 * - Incremental: one Node added (or deleted) through the store -> its route added (or deleted) in
 *   the kernel, from the API write to the monitor's timestamp; each event split at the agent's log
 *   line into delivery (API write -> the agent queued it), the agent's own share, and the monitor's.
 *
 * The whole measurement runs inside the node namespace (the script re-executes itself there with
 * `ip netns exec`), so the API server can listen on the namespace's 127.0.0.1 and the agent, the
 * monitor and the clock share one view. Namespaces are created and removed by the outer process.
 *
 * The Nodes carry a kubelet's status (capacity, conditions, images, ~5 KB each, as footprint.ts's), so
 * the list the agent decodes is the size a real cluster's is; --small-nodes leaves them bare (the
 * figures before 2026-12-07).
 *
 * --api-latency-ms holds each of the test API server's answers (not watches) that long: an API server
 * across the network, whose round trips the agent's one-page-ahead list hides (pkg/k8s/page-fetches.ts).
 *
 * The agent asks for its Node list and watch in protobuf (pkg/k8s/node-proto.ts), and the test API
 * server answers so, each Node encoded once when stored (a Go server's encoding costs microseconds;
 * the test server's protobufjs would otherwise be the list's slowest part). --json has it answer
 * JSON, as a server or proxy without protobuf does (and as every list was before 2026-12-07, every
 * watch before session 64).
 *
 *   node_modules/.bin/node bench/route-convergence.ts [--nodes 5000] [--reps 5] [--events 50]
 *     [--no-masq-rep] [--small-nodes] [--json] [--api-latency-ms 0] [--out FILE]
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AgentProcess, removeAgentDir } from '../test/support/agent-process.ts';
import { type RequestRecord, startTestApiServer } from '../test/support/apiserver/server.ts';
import { NetnsPool } from '../test/support/netns.ts';
import { tempDir, undoOnSignals } from '../test/support/signal-undo.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import {
  nodeObject,
  peerCidr,
  peerIp,
  populate,
  runInsideNamespace,
  SELF,
  startClusterAgent,
  wireNodeNamespace,
} from './lib/cluster.ts';
import { withKubeletStatus } from './lib/kubelet-status.ts';
import { nowMs, type RouteEvent, RouteMonitor } from './lib/route-monitor.ts';
import { commitId, median, pct, ratio, round, sleep, table, writeResult } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  nodes: { type: 'string', default: '5000' },
  reps: { type: 'string', default: '5' },
  'small-nodes': { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  events: { type: 'string', default: '50' },
  'api-latency-ms': { type: 'string', default: '0' },
  'no-masq-rep': { type: 'boolean', default: false },
  out: { type: 'string', default: join(import.meta.dirname, 'results', 'route-convergence.json') },
  inner: { type: 'boolean', default: false },
  ns: { type: 'string' },
  'ref-ns': { type: 'string' },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
const NODES = numberArg(SCRIPT, 'nodes', opts.nodes, { min: 2 });
const REPS = numberArg(SCRIPT, 'reps', opts.reps);
const EVENTS = numberArg(SCRIPT, 'events', opts.events);
const API_LATENCY_MS = numberArg(SCRIPT, 'api-latency-ms', opts['api-latency-ms'], { min: 0 });

if (!opts.inner) {
  // Outer: namespaces only; everything else runs inside the node namespace.
  const pool = new NetnsPool();
  let code = 1;
  try {
    const node = pool.add('rc');
    const fabric = pool.add('rcf');
    const ref = pool.add('rcr');
    const refFabric = pool.add('rcrf');
    wireNodeNamespace(node.name, fabric.name);
    wireNodeNamespace(ref.name, refFabric.name);
    code = await runInsideNamespace(node.name, import.meta.filename, [
      '--ns',
      node.name,
      '--ref-ns',
      ref.name,
    ]);
  } finally {
    pool.cleanup();
  }
  process.exit(code);
}

const ns = opts.ns!;
const refNs = opts['ref-ns']!;
if (!ns.startsWith('trl-') || !refNs.startsWith('trl-')) throw new Error('inner mode needs trl- namespaces');

const peers = Array.from({ length: NODES - 1 }, (_, k) => k + 1);
const batchDir = tempDir('trl-bench-rc-');
/** The issue's reference: plain routes, `via` the peer's node IP. */
const batchFile = join(batchDir, 'routes.batch');
writeFileSync(
  batchFile,
  `${peers.map((k) => `route add ${peerCidr(k)} via ${peerIp(k)} proto 126`).join('\n')}\n`,
);
/** The kernel objects trellis writes (pkg/netlink/nexthop-book.ts): one nexthop object per route. */
const nexthopBatchFile = join(batchDir, 'nexthops.batch');
writeFileSync(
  nexthopBatchFile,
  `${[
    ...peers.map((k) => `nexthop add id ${0x7e000000 + k} via ${peerIp(k)} dev eth0 proto 126`),
    ...peers.map((k) => `route add ${peerCidr(k)} nhid ${0x7e000000 + k} proto 126`),
  ].join('\n')}\n`,
);

/**
 * Our routes and their nexthop objects out of a namespace. `ip route flush` (iproute2 6.1) fails
 * with EINVAL on routes that name objects; deleting the objects takes their routes with them.
 */
function flushOurs(netns: string): void {
  execFileSync('ip', ['-n', netns, 'nexthop', 'flush', 'protocol', '126'], { stdio: 'ignore' });
  execFileSync('ip', ['-n', netns, 'route', 'flush', 'proto', '126']);
}

/**
 * `ip -batch` adding the same routes in a fresh namespace, from its spawn to the last route's
 * notification, timed by the same `ip -ts monitor` (in that namespace) as trellis's routes: both
 * pay the monitor's parsing on the same cores. Then flushed.
 */
async function referenceRun(file = batchFile): Promise<number> {
  const monitor = new RouteMonitor(['-n', refNs]);
  try {
    await monitor.ready();
    const t0 = nowMs();
    execFileSync('ip', ['-n', refNs, '-batch', file]);
    const last = await monitor.waitFor(lastOf(new Set(peerCidrs())), 30_000);
    const count = execFileSync('ip', ['-n', refNs, 'route', 'show', 'proto', '126'], { encoding: 'utf8' })
      .trim()
      .split('\n').length;
    if (count !== NODES - 1) throw new Error(`reference programmed ${count} routes, expected ${NODES - 1}`);
    flushOurs(refNs);
    await sleep(SETTLE_MS);
    return last.at - t0;
  } finally {
    monitor.stop();
  }
}

function peerCidrs(): string[] {
  return Array.from({ length: NODES - 1 }, (_, k) => peerCidr(k + 1));
}

/** A monitor predicate true at the event that completes `wanted` (distinct prefixes of proto 126 added). */
function lastOf(wanted: ReadonlySet<string>): (e: RouteEvent) => boolean {
  const seen = new Set<string>();
  return (e) => {
    if (!e.deleted && wanted.has(e.dst) && e.line.includes('proto 126')) seen.add(e.dst);
    return seen.size === wanted.size;
  };
}

/**
 * Where a list's time went, from the test API server's own records: its time on each page (request
 * arrived -> answer handed to the OS), and its time waiting for the agent's next request (one answer
 * sent -> the next request in). The two add up to the list. The agent asks for a page once the head
 * of the one before has arrived and that one is the page it reads (pkg/k8s/page-fetches.ts), so the
 * wait is the agent still reading and parsing the pages before.
 */
interface ListSplit {
  pages: number;
  serverMs: number;
  waitingMs: number;
}

function listSplit(pages: readonly RequestRecord[]): ListSplit {
  let serverMs = 0;
  let waitingMs = 0;
  for (const [i, r] of pages.entries()) {
    serverMs += (r.sentAt ?? r.at) - r.at;
    if (i > 0) waitingMs += r.at - (pages[i - 1]!.sentAt ?? r.at);
  }
  return { pages: pages.length, serverMs, waitingMs };
}

interface TrellisRun {
  masquerade: boolean;
  /** From the server having sent the first full list's last page to the last peer route in the kernel. */
  fromListSentMs: number;
  /** From the agent's first watch request (after its list was cached and its pass begun) to the same. */
  fromWatchRequestMs: number;
  /** From the first list request to the last peer route. */
  fromListStartMs: number;
  /** The first list's requests, and their time split (listSplit). */
  list: ListSplit;
  /** The agent's own 'reconciled' durationMs for the pass that added the routes. */
  agentPassMs: number;
  addLatency: number[];
  delLatency: number[];
  /** The agent's own share of each added Node's event: its 'reconciled node' queuedMs + durationMs. */
  agentStepMs: number[];
  /** Where each added Node's time went (see splitEvent), in event order. */
  addSplit: EventSplit[];
  /** Full passes during the timed events: their log time and duration. */
  fullPassesDuringEvents: string[];
  routes: number;
}

/**
 * One event's latency split at the agent's 'reconciled node' log line (pino's ISO time: 1 ms
 * resolution): API write -> the agent queued the step (the watch event's delivery: the API server's
 * write, the socket, the agent's HTTP and JSON parsing, its informer); queued + step (the agent's
 * own share); step end -> `ip monitor` printed the route (the monitor's own wake-up).
 */
interface EventSplit {
  totalMs: number;
  deliveryMs: number;
  agentMs: number;
  monitorMs: number;
}

function splitEvent(
  logs: readonly Record<string, unknown>[],
  node: string,
  t0: number,
  at: number,
): EventSplit | undefined {
  const line = logs.find(
    (l) => l.msg === 'reconciled node' && l.peer === node && Date.parse(String(l.time)) >= Math.floor(t0),
  );
  if (line === undefined) return undefined;
  const end = Date.parse(String(line.time));
  const agentMs = Number(line.queuedMs ?? 0) + Number(line.durationMs);
  return { totalMs: at - t0, deliveryMs: end - agentMs - t0, agentMs, monitorMs: at - end };
}

/** Until the agent has logged nothing for quietMs (at most 10 s). */
async function quiet(agent: AgentProcess, quietMs: number): Promise<void> {
  const start = nowMs();
  let seen = agent.logs.length;
  let since = nowMs();
  while (nowMs() - start < 10_000) {
    await sleep(25);
    if (agent.logs.length !== seen) {
      seen = agent.logs.length;
      since = nowMs();
    } else if (nowMs() - since >= quietMs) {
      return;
    }
  }
}

async function trellisRun(masquerade: boolean, events: number): Promise<TrellisRun> {
  const srv = await startTestApiServer({
    host: '127.0.0.1',
    port: 0,
    historySize: 20_000,
    latencyMs: API_LATENCY_MS,
    protobuf: !opts.json,
  });
  const monitor = new RouteMonitor();
  let agent: AgentProcess | undefined;
  try {
    populate(srv, NODES);
    if (!opts['small-nodes']) {
      const t = new Date().toISOString();
      const names = [SELF, ...Array.from({ length: NODES - 1 }, (_, i) => `bench-peer-${i + 1}`)];
      for (const [i, name] of names.entries()) srv.store.updateNode(name, (n) => withKubeletStatus(n, i, t));
    }
    let listStart = Number.NaN;
    let watchAt = Number.NaN;
    srv.store.failRequests((r) => {
      if (r.path === '/api/v1/nodes' && r.method === 'GET') {
        if (r.watch && Number.isNaN(watchAt)) watchAt = nowMs();
        if (!r.watch && Number.isNaN(listStart)) listStart = nowMs();
      }
      return false;
    });
    await monitor.ready();
    agent = startClusterAgent(ns, srv, ['--log-level', 'info', ...(masquerade ? [] : ['--no-masquerade'])]);
    const last = await monitor.waitFor(lastOf(new Set(peerCidrs())), 120_000);
    await agent.ready();
    // The pass's log line may come after the routes and the ready line (the log is written off the
    // pass's path): waited for, a few seconds at most, rather than read as missing.
    const passLine = (): Record<string, unknown> | undefined =>
      agent!.logs.find((l) => l.msg === 'reconciled' && Number(l.added) >= NODES - 1);
    for (let i = 0; i < 100 && passLine() === undefined; i++) await sleep(50);
    const pass = passLine();
    const routes = execFileSync('ip', ['-n', ns, 'route', 'show', 'proto', '126'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter((l) => l.includes(' via ')).length;
    // Incremental: one Node at a time, API write -> kernel route. Measured from a quiet agent: right after
    // ready, the agent's own start-up writes (its VTEP annotation, its Node condition) come back as
    // events of its Node and may run one more full pass, which the first sample would otherwise wait for.
    // That pass logs nothing until it ends, so the silence waited for outlasts a pass (0.7 s of the
    // slowest VM's 1 s cold pass; 500 ms of silence let the first sample in mid-pass there).
    await quiet(agent, Math.max(500, 1.5 * Number(pass?.durationMs ?? 0)));
    const stepsFrom = agent.logs.length;
    const addLatency: number[] = [];
    const delLatency: number[] = [];
    const addTimes: { node: string; t0: number; at: number }[] = [];
    for (let k = 0; k < events; k++) {
      const cidr = `10.200.${k}.0/24`;
      const t0 = nowMs();
      srv.store.addNode(nodeObject(`bench-ev-${k}`, `10.10.200.${k + 1}`, cidr));
      const ev = await monitor.waitFor((e) => !e.deleted && e.dst === cidr);
      addLatency.push(ev.at - t0);
      addTimes.push({ node: `bench-ev-${k}`, t0, at: ev.at });
      await sleep(20);
    }
    const delsFrom = agent.logs.length;
    for (let k = 0; k < events; k++) {
      const cidr = `10.200.${k}.0/24`;
      const t0 = nowMs();
      srv.store.deleteNode(`bench-ev-${k}`);
      const ev = await monitor.waitFor((e) => e.deleted && e.dst === cidr && e.at >= t0 - 1);
      delLatency.push(ev.at - t0);
      await sleep(20);
    }
    const agentLogs = agent.logs;
    // The list's last page: the last list request before the first watch (the informer pages, then watches).
    const nodeGets = srv.store.requests().filter((r) => r.path === '/api/v1/nodes' && r.method === 'GET');
    const firstWatch = nodeGets.findIndex((r) => r.watch);
    const lastPage = nodeGets.slice(0, firstWatch).findLast((r) => !r.watch && r.status === 200);
    if (lastPage?.sentAt === undefined) throw new Error('no list page was sent before the first watch');
    return {
      masquerade,
      fromListSentMs: last.at - (performance.timeOrigin + lastPage.sentAt),
      fromWatchRequestMs: last.at - watchAt,
      fromListStartMs: last.at - listStart,
      list: listSplit(nodeGets.slice(0, firstWatch).filter((r) => !r.watch)),
      agentPassMs: Number(pass?.durationMs ?? Number.NaN),
      addLatency,
      delLatency,
      // Added Nodes only: a deletion's route goes early in its step, so the step's end (the log line)
      // does not split a deletion's latency, and its step is not a share of it.
      agentStepMs: agent.logs
        .slice(stepsFrom, delsFrom)
        .filter((l) => l.msg === 'reconciled node')
        .map((l) => Number(l.queuedMs ?? 0) + Number(l.durationMs)),
      addSplit: addTimes.flatMap((d) => splitEvent(agentLogs, d.node, d.t0, d.at) ?? []),
      // Full passes (every peer) that ran while the events were timed: each holds the steps behind it.
      fullPassesDuringEvents: agent.logs
        .slice(stepsFrom)
        .filter((l) => l.msg === 'reconciled')
        .map((l) => `${String(l.time)} ${Number(l.durationMs)} ms`),
      routes,
    };
  } catch (err) {
    process.stderr.write(
      `monitor stderr: ${monitor.stderr()}\nagent tail: ${JSON.stringify(agent?.logs.slice(-8))}\n`,
    );
    throw err;
  } finally {
    monitor.stop();
    if (agent !== undefined) {
      await Promise.race([agent.stop(), sleep(10_000)]); // SIGTERM first: lets --cpu-prof write its profile
      await agent.kill();
      removeAgentDir(agent.dir);
    }
    await srv.close();
    flushOurs(ns);
    await sleep(SETTLE_MS);
    if (masquerade) {
      try {
        execFileSync('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', 'trellis'], {
          stdio: 'ignore',
        });
      } catch {
        // No table: nothing to remove.
      }
    }
  }
}

/**
 * After each run's flush: the kernel frees ~10,000 routes and objects in deferred work (RCU), which
 * would otherwise land on whichever side runs next.
 */
const SETTLE_MS = 2000;

const reference: number[] = [];
const nexthopReference: number[] = [];
/** The reference run next to the masquerade repetition: its own, never among the plain ones. */
let masqReference: number | undefined;
const runs: TrellisRun[] = [];
try {
  // Warm-ups, not counted: both sides' first run pays for cold caches (binaries, page cache).
  await referenceRun();
  await referenceRun(nexthopBatchFile);
  await trellisRun(false, 0);
  for (let rep = 0; rep < REPS; rep++) {
    // The order alternates: neither side always follows the other.
    let r: TrellisRun | undefined;
    if (rep % 2 === 1) r = await trellisRun(false, EVENTS);
    reference.push(await referenceRun());
    nexthopReference.push(await referenceRun(nexthopBatchFile));
    r ??= await trellisRun(false, EVENTS);
    runs.push(r);
    process.stderr.write(
      `rep ${rep + 1}/${REPS}: ip -batch ${round(reference.at(-1)!)} ms, with nexthop objects ${round(nexthopReference.at(-1)!)} ms; trellis ${round(r.fromListSentMs)} ms from list sent (${round(r.fromWatchRequestMs)} from watch request; agent pass ${r.agentPassMs} ms; list ${r.list.pages} pages, server answering ${round(r.list.serverMs)} / waiting ${round(r.list.waitingMs)} ms), add p99 ${round(pct(r.addLatency, 99))} ms, del p99 ${round(pct(r.delLatency, 99))} ms\n`,
    );
  }
  if (!opts['no-masq-rep']) {
    masqReference = await referenceRun();
    const r = await trellisRun(true, EVENTS);
    runs.push(r);
    process.stderr.write(`masquerade rep: trellis ${round(r.fromListSentMs)} ms from list sent\n`);
  }
} finally {
  rmSync(batchDir, { recursive: true, force: true });
}

const plain = runs.filter((r) => !r.masquerade);
const masq = runs.find((r) => r.masquerade);
const adds = plain.flatMap((r) => r.addLatency);
const dels = plain.flatMap((r) => r.delLatency);
const steps = plain.flatMap((r) => r.agentStepMs);
/** Each part's p50 / p99, and its value in the slowest 2 % of the events (1 ms resolution). */
function splitSummary(splits: readonly EventSplit[]) {
  const slowest = [...splits]
    .sort((a, b) => b.totalMs - a.totalMs)
    .slice(0, Math.max(1, Math.ceil(splits.length / 50)));
  const part = (pick: (s: EventSplit) => number) => ({
    p50Ms: round(median(splits.map(pick))),
    p99Ms: round(pct(splits.map(pick), 99)),
    slowestMs: slowest.map((s) => round(pick(s))),
  });
  return {
    samples: splits.length,
    total: part((s) => s.totalMs),
    delivery: part((s) => s.deliveryMs),
    agent: part((s) => s.agentMs),
    monitor: part((s) => s.monitorMs),
  };
}
function latencySummary(ms: readonly number[]) {
  return {
    samples: ms.length,
    p50Ms: round(median(ms)),
    p99Ms: round(pct(ms, 99)),
    maxMs: round(Math.max(...ms)),
  };
}
const refMs = median(reference);
const summary = {
  peers: NODES - 1,
  convergenceMs: round(median(plain.map((r) => r.fromListSentMs))),
  convergenceFromWatchRequestMs: round(median(plain.map((r) => r.fromWatchRequestMs))),
  convergenceFromListStartMs: round(median(plain.map((r) => r.fromListStartMs))),
  // The first list's pages, and their time: the test API server answering, and waiting for the agent.
  listPages: median(plain.map((r) => r.list.pages)),
  listServerMs: round(median(plain.map((r) => r.list.serverMs))),
  listWaitingMs: round(median(plain.map((r) => r.list.waitingMs))),
  agentPassMs: round(median(plain.map((r) => r.agentPassMs))),
  ipBatchMs: round(refMs),
  ratioVsIpBatch: ratio(median(plain.map((r) => r.fromListSentMs)), refMs),
  // Each trellis run against the ip -batch run just before it: robust to load that drifts over a run.
  pairedRatioMedian: ratio(median(plain.map((r, i) => r.fromListSentMs / reference[i]!)), 1),
  ipBatchNexthopsMs: round(median(nexthopReference)),
  ratioVsIpBatchNexthops: ratio(median(plain.map((r) => r.fromListSentMs)), median(nexthopReference)),
  masqueradeConvergenceMs: masq === undefined ? null : round(masq.fromListSentMs),
  masqueradeAgentPassMs: masq === undefined ? null : masq.agentPassMs,
  nodeAdd: latencySummary(adds),
  nodeDel: latencySummary(dels),
  // As deployed: the masquerade set follows each Node event too.
  masqueradeNodeAdd: masq === undefined ? null : latencySummary(masq.addLatency),
  masqueradeNodeDel: masq === undefined ? null : latencySummary(masq.delLatency),
  agentStep: latencySummary(steps),
  // Where the events' time went (splitEvent).
  nodeAddSplit: splitSummary(plain.flatMap((r) => r.addSplit)),
  routesInKernel: plain.map((r) => r.routes),
};
const commit = commitId();
process.stdout.write(
  `${table(
    ['measure', 'value'],
    [
      [
        `cold convergence, ${NODES - 1} routes (last list page sent -> last route), ms`,
        summary.convergenceMs,
      ],
      [
        "  from the agent's watch request (its list cached, its pass begun), ms",
        summary.convergenceFromWatchRequestMs,
      ],
      ['  from the first list request, ms', summary.convergenceFromListStartMs],
      [
        `    the list's ${summary.listPages} pages: test API server answering / waiting for the agent, ms`,
        `${summary.listServerMs} / ${summary.listWaitingMs}`,
      ],
      ["  agent's reconcile pass (log durationMs), ms", summary.agentPassMs],
      ['  ip -batch, same routes, fresh namespace, ms', summary.ipBatchMs],
      ['  trellis / ip -batch (medians)', summary.ratioVsIpBatch],
      ['  trellis / ip -batch (median of paired reps)', summary.pairedRatioMedian],
      ['  ip -batch writing nexthop objects + routes naming them, ms', summary.ipBatchNexthopsMs],
      ['  trellis / that (medians)', summary.ratioVsIpBatchNexthops],
      ['  with masquerade (1 rep), ms', summary.masqueradeConvergenceMs ?? 'not run'],
      [
        `node added -> route in kernel, p50 / p99 ms (${adds.length})`,
        `${summary.nodeAdd.p50Ms} / ${summary.nodeAdd.p99Ms}`,
      ],
      [
        `node deleted -> route gone, p50 / p99 ms (${dels.length})`,
        `${summary.nodeDel.p50Ms} / ${summary.nodeDel.p99Ms}`,
      ],
      [
        `  with masquerade: added / deleted, p50 / p99 ms (${summary.masqueradeNodeAdd?.samples ?? 0} each)`,
        summary.masqueradeNodeAdd === null || summary.masqueradeNodeDel === null
          ? 'not run'
          : `${summary.masqueradeNodeAdd.p50Ms} / ${summary.masqueradeNodeAdd.p99Ms}; ${summary.masqueradeNodeDel.p50Ms} / ${summary.masqueradeNodeDel.p99Ms}`,
      ],
      [
        `  added: the agent's share (queued + step, its log), p50 / p99 ms (${steps.length})`,
        `${summary.agentStep.p50Ms} / ${summary.agentStep.p99Ms}`,
      ],
      ...(['delivery', 'agent', 'monitor'] as const).map((part) => {
        const split = summary.nodeAddSplit;
        return [
          `  added: ${part} part, p50 / p99; in the slowest ${split.total.slowestMs.length} (${split.total.slowestMs.join(', ')} ms)`,
          `${split[part].p50Ms} / ${split[part].p99Ms}; ${split[part].slowestMs.join(', ')}`,
        ];
      }),
    ],
  )}\n(commit ${commit}, ${REPS} reps, medians${API_LATENCY_MS > 0 ? `, the API server answering after ${API_LATENCY_MS} ms` : ''})\n`,
);
writeResult(
  opts.out,
  'route-convergence',
  commit,
  {
    nodes: NODES,
    reps: REPS,
    /** Bare Nodes (--small-nodes) rather than kubelet-sized ones. */
    smallNodes: opts['small-nodes'] === true,
    /** --json: the Node list and watch in JSON, not protobuf. */
    json: opts.json === true,
    /** --api-latency-ms: the test API server's wait before each answer (not watches). */
    apiLatencyMs: API_LATENCY_MS,
    summary,
    referenceMs: reference.map((x) => round(x)),
    masqReferenceMs: masqReference === undefined ? null : round(masqReference),
    nexthopReferenceMs: nexthopReference.map((x) => round(x)),
    runs: runs.map((r) => ({
      ...r,
      addLatency: r.addLatency.map((x) => round(x)),
      delLatency: r.delLatency.map((x) => round(x)),
    })),
  },
  { runs: undefined },
);
