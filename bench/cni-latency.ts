/**
 * Pod setup latency: CNI ADD and DEL through the shipped shim (dist/bin/trellis) talking to a real
 * agent, against Debian's reference plugins (ptp + host-local, bridge + host-local, ptp with ipMasq),
 * every binary copied into one bin directory at the start as the DaemonSet's install-cni copies the shim
 * (lib/installed-plugin.ts),
 * driven like a runtime: cniVersion 1.0.0, a fresh pod namespace per pod, DEL with prevResult, each
 * plugin timed to its exit by a runner that lives in the node namespace (so no `ip netns exec`
 * start-up is counted, for anyone): a sequential ADD from its pod's namespace pinned, DEL and the
 * concurrent bursts' ADDs from the spawn (a burst's wall time from its first pin). Sequential ADDs alternate between plugins pod by pod, DELs and
 * concurrent rounds plugin by plugin (the order rotating per run); ratios compare medians of per-run
 * figures from the same run. DEL is also timed until every veth of the round is gone (trellis deletes
 * its veth pairs after DEL answered).
 *
 * Pod namespaces appear as a runtime makes them appear. Each is created beforehand (`ip netns add`,
 * untimed), then pinned at its plugin's pod directory, /run/trl-pins-HEX/PLUGIN/NAME (an empty
 * file, the namespace's nsfs bind-mounted onto it, as containerd and CRI-O do in /var/run/netns), right
 * before its ADD is spawned, for every plugin alike: that path is its CNI_NETNS, and it is unpinned
 * after its DEL. Why: the agent runs with --netns-dir on trellis's directory alone, and prepares a
 * pod's veth pair as soon as the pod's namespace appears there, ahead of its ADD. So a namespace must
 * not appear any earlier than a runtime makes it appear (that would hand the agent a head start no
 * runtime gives), and the agent must never see, and so prepare anything for, the reference plugins'
 * pods. The root is a shared mount made before the agent and the runners start, so that their mount
 * namespaces (slave copies made by `ip netns exec`) receive the pins. A sequential ADD is timed from
 * right before its pin (process.hrtime, machine-wide, against the runner's exit time), for every
 * plugin alike: the agent starts making the pair at the pin, while the request reaches the runner and
 * the plugin starts, so timing from the spawn would leave that head start out (`addSpawnedP50` keeps
 * that figure). A concurrent burst's wall time starts before its pins (~20 µs each).
 *
 *   node_modules/.bin/node scripts/build.ts
 * Every sequential ADD starts after a quiet gap (--gap-ms): what a plugin leaves running once it has
 * answered (the agent topping up its spare lease files, writing its log line, collecting garbage; the
 * kernel's deferred work) must not land in the next plugin's timed ADD, which with four plugins in
 * balanced orders is always another plugin's, never trellis's own. Each run has --bursts concurrent
 * bursts per plugin, interleaved, so the burst's figure is a median of several, pooled over the runs.
 *
 *   node_modules/.bin/node scripts/build.ts
 *   node_modules/.bin/node bench/cni-latency.ts [--runs 4] [--pods 50] [--concurrent 20] [--bursts 3]
 *     [--gap-ms 100] [--only trellis,ptp] [--interleave pods|rounds] [--no-prepare] [--out FILE]
 *
 * Prints a table and, last, one JSON line (also written to --out, default bench/results/cni-latency.json).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { removeAgentDir, startAgent } from '../test/support/agent-process.ts';
import { REFERENCE_PLUGIN_DIR, SHIM_BINARY } from '../test/support/cni-driver.ts';
import { addNetns, delNetns, NetnsPool, type TestNetns } from '../test/support/netns.ts';
import { createPodPins, type PodPins } from '../test/support/pod-pins.ts';
import { tempDir, undoOnSignals } from '../test/support/signal-undo.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { installPlugin } from './lib/installed-plugin.ts';
import { liveThreadsCpuMs, mainThreadCpuMs } from './lib/proc.ts';
import { NsRunner, type TimedRun } from './lib/runner-client.ts';
import { commitId, median, pct, ratio, round, sleep, table, writeResult } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  // A multiple of the plugin count (4, or 2 with --only trellis,ptp): each plugin opens the run's
  // phases (concurrent burst, DELs) equally often.
  runs: { type: 'string', default: '4' },
  pods: { type: 'string', default: '50' },
  concurrent: { type: 'string', default: '20' },
  bursts: { type: 'string', default: '3' },
  'gap-ms': { type: 'string', default: '100' },
  out: { type: 'string', default: join(import.meta.dirname, 'results', 'cni-latency.json') },
  only: { type: 'string' },
  /** The agent without --netns-dir: every ADD makes its veth pair (for A/B runs). */
  'no-prepare': { type: 'boolean', default: false },
  /** pods: sequential ADDs alternate between plugins pod by pod; rounds: whole rounds alternate. */
  interleave: { type: 'string', default: 'pods' },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
if (opts.interleave !== 'pods' && opts.interleave !== 'rounds') {
  process.stderr.write(`--interleave must be pods or rounds, not ${opts.interleave}\n`);
  process.exit(2);
}
const RUNS = numberArg(SCRIPT, 'runs', opts.runs);
const PODS = numberArg(SCRIPT, 'pods', opts.pods);
const CONCURRENT = numberArg(SCRIPT, 'concurrent', opts.concurrent);
const BURSTS = numberArg(SCRIPT, 'bursts', opts.bursts);
const GAP_MS = numberArg(SCRIPT, 'gap-ms', opts['gap-ms']);

for (const bin of [
  SHIM_BINARY,
  ...['ptp', 'bridge', 'host-local'].map((n) => join(REFERENCE_PLUGIN_DIR, n)),
]) {
  if (!existsSync(bin)) {
    process.stderr.write(`${bin} is missing (npm run build; apt-get install containernetworking-plugins)\n`);
    process.exit(2);
  }
}

interface Plugin {
  name: string;
  binary: string;
  node: TestNetns;
  runner: NsRunner;
  conf: Record<string, unknown>;
  /** Its pod directory: its pods' namespaces are pinned there, right before their ADD. */
  podDir: string;
  /** Waits for work the plugin left running after DEL answered (trellis's deferred veth deletion). */
  settle: () => Promise<void>;
}

const pool = new NetnsPool();
/** Pod namespaces, created and removed per round (NetnsPool only removes all at once). */
const podNs = new Set<string>();
function addPod(tag: string): TestNetns {
  const ns = addNetns(tag, { loUp: false });
  podNs.add(ns.name);
  return ns;
}
function removePods(pods: readonly TestNetns[]): void {
  for (const p of pods) {
    delNetns(p.name);
    podNs.delete(p.name);
  }
}
/** Where pod `pod` of plugin `p` appears, its CNI_NETNS: pinned right before its ADD. */
function podPath(p: Plugin, pod: TestNetns): string {
  return join(p.podDir, pod.name);
}
/** Unpins the pods (those still pinned), then removes their staging namespaces, even if an unpin failed. */
function releasePods(p: Plugin, pods: readonly TestNetns[]): void {
  try {
    for (const pod of pods) pins!.unpin(podPath(p, pod));
  } finally {
    removePods(pods);
  }
}
const tmp = tempDir('trl-bench-cni-');
// Every plugin's binary copied into one bin directory by the same code, the one install-cni puts the
// shim on a node with (lib/installed-plugin.ts): all of them start from a freshly written file, whatever
// state the page cache left the originals in. That directory is the runtime's CNI_PATH.
const binDir = join(tmp, 'bin');
mkdirSync(binDir);
const shimBinary = await installPlugin(binDir, 'trellis', SHIM_BINARY);
for (const name of ['ptp', 'bridge', 'host-local'])
  await installPlugin(binDir, name, join(REFERENCE_PLUGIN_DIR, name));
const plugins: Plugin[] = [];
/** The plugins' pod directories under the pins' root. */
const POD_DIRS = ['trellis', 'ptp', 'bridge', 'ptp-ipMasq'] as const;
type PodDir = (typeof POD_DIRS)[number];
let pins: PodPins<PodDir> | undefined;
let agent: ReturnType<typeof startAgent> | undefined;

/**
 * The links of `prefix` in `ns`, undefined when the kernel interrupted the dump: links deleted while
 * it ran (NLM_F_DUMP_INTR, which ip reports on stderr) can leave out ones still there, and a count
 * that comes out 0 too soon would time the DELs' deletions shorter than they are.
 */
function linkCount(ns: string, prefix: string): number | undefined {
  const out = spawnSync('ip', ['-n', ns, '-j', 'link', 'show'], { encoding: 'utf8' });
  if (out.stderr.includes('Dump was interrupted')) return undefined;
  if (out.status !== 0)
    throw new Error(`ip -n ${ns} link show: ${out.stderr.trim() || `exit ${out.status}`}`);
  const links = JSON.parse(out.stdout) as { ifname: string }[];
  return links.filter((l) => l.ifname.startsWith(prefix)).length;
}

/** Until no link of `prefix` is left; one left after 30 s is a DEL left undone, and stops the bench. */
async function waitLinks(ns: string, prefix: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (let left = linkCount(ns, prefix); left !== 0; left = linkCount(ns, prefix)) {
    if (Date.now() > deadline)
      throw new Error(`${left ?? 'some'} ${prefix}* link(s) still in ${ns} 30 s after their DELs answered`);
    await sleep(20);
  }
}

function hostLocal(subnet: string, name: string): Record<string, unknown> {
  return {
    type: 'host-local',
    ranges: [[{ subnet }]],
    routes: [{ dst: '0.0.0.0/0' }],
    dataDir: join(tmp, `ipam-${name}`),
  };
}

function env(command: string, id: string, netns: string): Record<string, string | undefined> {
  return {
    PATH: process.env.PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: binDir,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-${id.slice(0, 8)};K8S_POD_INFRA_CONTAINER_ID=${id}`,
  };
}

function check(r: TimedRun, what: string): TimedRun {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.stdout} ${r.stderr}`);
  return r;
}

interface Sample {
  /** Sequential ADDs, from the pod's namespace pinned to the plugin's exit. */
  add: number[];
  /** The same ADDs from the plugin's spawn. */
  addSpawned: number[];
  del: number[];
  /** The round's DELs, from the first one's spawn until every veth of the round is gone. */
  delAllGone: number;
  /** The run's concurrent bursts' wall times. */
  concurrentWalls: number[];
}

/** One plugin's sequential round: ADDs from the pin (`add`) and from the spawn, DELs, all veths gone. */
interface SequentialRound {
  add: number[];
  addSpawned: number[];
  del: number[];
  delAllGone: number;
}

/**
 * One round of sequential pods for every plugin. The ADDs are interleaved pod by pod (pod i of each
 * plugin in turn, in orders where each plugin follows every other equally often: balancedOrders), so that every plugin's ADDs meet the same
 * machine: its speed drifts within minutes here, and alternating whole rounds left the paired ratios
 * of repeated runs ±0.1 apart. The DELs follow one plugin after the other, each plugin's followed by
 * its settle: trellis deletes its veths in the background, which would slow the next plugin's DELs.
 */
async function sequentialRound(ps: readonly Plugin[], rotate: number): Promise<Map<string, SequentialRound>> {
  const rounds = ps.map((p) => {
    const pods = Array.from({ length: PODS }, () => addPod('p'));
    return {
      p,
      pods,
      ids: pods.map(() => randomBytes(32).toString('hex')),
      conf: JSON.stringify(p.conf),
      add: [] as number[],
      /** The same ADDs from their spawn (the runner's own clock): what the pin's head start leaves. */
      addSpawned: [] as number[],
      del: [] as number[],
      delAllGone: 0,
      results: [] as string[],
    };
  });
  const orders = balancedOrders(rounds.length);
  try {
    for (let i = 0; i < PODS; i++) {
      const order = orders[(i + rotate) % orders.length]!;
      for (let k = 0; k < rounds.length; k++) {
        const r = rounds[order[k]!]!;
        await sleep(GAP_MS); // the plugin before finishes what it left running (see the header)
        // Timed from the pin, as a runtime's pod waits from its namespace's creation: the agent starts
        // preparing the pair there, while the request reaches the runner and the plugin is spawned.
        const pinned = process.hrtime.bigint();
        const netns = pins!.pin(podPath(r.p, r.pods[i]!), r.pods[i]!.path);
        const run = check(
          await r.p.runner.run(r.p.binary, env('ADD', r.ids[i]!, netns), r.conf),
          `${r.p.name} ADD`,
        );
        r.add.push(NsRunner.since(pinned, run));
        r.addSpawned.push(run.ms);
        r.results.push(run.stdout);
      }
    }
    for (let k = 0; k < rounds.length; k++) {
      const r = rounds[(k + rotate) % rounds.length]!;
      const t0 = performance.now();
      /** The unpins' time, left out of delAllGone. */
      let unpinMs = 0;
      for (let i = 0; i < PODS; i++) {
        const delConf = JSON.stringify({ ...r.p.conf, prevResult: JSON.parse(r.results[i]!) });
        const netns = podPath(r.p, r.pods[i]!);
        const run = check(
          await r.p.runner.run(r.p.binary, env('DEL', r.ids[i]!, netns), delConf),
          `${r.p.name} DEL`,
        );
        r.del.push(run.ms);
        // As a runtime: the pod's namespace goes right after its DEL.
        const u0 = performance.now();
        pins!.unpin(netns);
        unpinMs += performance.now() - u0;
      }
      // Until every veth of the round is gone: trellis deletes them after DEL answered.
      await r.p.settle();
      r.delAllGone = performance.now() - t0 - unpinMs;
    }
  } finally {
    for (const r of rounds) releasePods(r.p, r.pods);
  }
  return new Map(
    rounds.map((r) => [
      r.p.name,
      { add: r.add, addSpawned: r.addSpawned, del: r.del, delAllGone: r.delAllGone },
    ]),
  );
}

/**
 * Orders of n plugins in which each one follows every other equally often (a Williams design: n
 * orders for even n, 2n for odd), so no plugin always runs right after the same one (whose kernel
 * work, a veth deletion say, may still be settling).
 */
function balancedOrders(n: number): number[][] {
  const first: number[] = [];
  for (let k = 0, lo = 0, hi = n - 1; k < n; k++) first.push(k % 2 === 0 ? lo++ : hi--);
  const rows = Array.from({ length: n }, (_, r) => first.map((x) => (x + r) % n));
  return n % 2 === 0 ? rows : [...rows, ...rows.map((row) => [...row].reverse())];
}

async function concurrentRound(p: Plugin): Promise<number> {
  const pods = Array.from({ length: CONCURRENT }, () => addPod('c'));
  const ids = pods.map(() => randomBytes(32).toString('hex'));
  const paths = pods.map((pod) => podPath(p, pod));
  const conf = JSON.stringify(p.conf);
  try {
    // All the burst's namespaces appear, then all its ADDs start. The wall time starts before the pins
    // (~20 µs each, every plugin alike): the agent starts making a pair as the first pin appears.
    const t0 = performance.now();
    for (let i = 0; i < pods.length; i++) pins!.pin(paths[i]!, pods[i]!.path);
    const runs = await Promise.all(
      paths.map((netns, i) => p.runner.run(p.binary, env('ADD', ids[i]!, netns), conf)),
    );
    const wall = performance.now() - t0;
    for (const r of runs) check(r, `${p.name} concurrent ADD`);
    const dels = await Promise.all(
      paths.map(async (netns, i) => {
        const r = await p.runner.run(
          p.binary,
          env('DEL', ids[i]!, netns),
          JSON.stringify({ ...p.conf, prevResult: JSON.parse(runs[i]!.stdout) }),
        );
        if (r.code === 0) pins!.unpin(netns); // a failed DEL's pin stays for the finally
        return r;
      }),
    );
    for (const r of dels) check(r, `${p.name} concurrent DEL`);
    await p.settle();
    return wall;
  } finally {
    releasePods(p, pods);
  }
}

const samples = new Map<string, Sample[]>();
const agentAddMs: number[] = [];
/** The agent's ADDs that found their veth pair made when the namespace appeared (preparedVeth). */
let agentPreparedAdds = 0;
const agentDelMs: number[] = [];
/** The agent's ADDs of the sequential rounds alone: the concurrent bursts' wait in its queue. */
const agentSequentialAddMs: number[] = [];
/** The agent log's [start, end) of each sequential round. */
const sequentialLogs: [number, number][] = [];
/**
 * The agent's CPU (user + system, all its threads) and its JS thread's alone over its timed rounds,
 * and the CNI calls it served in them.
 */
let agentCpuMs = 0;
let agentJsThreadMs = 0;
/** The agent's idle CPU per ms of wall time: all its threads, and its JS thread alone. */
let agentIdle = { all: 0, js: 0 };
let agentCalls = 0;
try {
  // Before the agent and the runners start: their mount namespaces are copies made then, slaves of the
  // root's shared mount from that moment on.
  pins = createPodPins(POD_DIRS);
  const podPins = pins;
  // trellis: a real agent (standalone, IPv4 like the references) in its node namespace, watching its
  // own pod directory alone.
  const tNode = pool.add('tn');
  agent = startAgent({
    ns: tNode.name,
    podCIDRs: ['10.244.0.0/20'],
    extraArgs: [
      '--log-level',
      'info',
      ...(opts['no-prepare'] ? [] : ['--netns-dir', podPins.dir('trellis')]),
    ],
  });
  await agent.ready();
  const a = agent;
  plugins.push({
    name: 'trellis',
    binary: shimBinary,
    node: tNode,
    runner: new NsRunner(tNode.name),
    conf: { cniVersion: '1.0.0', name: 'trellis', type: 'trellis', socket: a.socket, spoolDir: a.spoolDir },
    podDir: podPins.dir('trellis'),
    settle: () => waitLinks(tNode.name, 'trl'),
  });
  const refs: [string, string, PodDir, Record<string, unknown>][] = [
    ['ptp', 'ptp', 'ptp', { type: 'ptp', ipam: hostLocal('10.250.0.0/20', 'ptp') }],
    [
      'bridge',
      'bridge',
      'bridge',
      { type: 'bridge', bridge: 'cni0', isGateway: true, ipam: hostLocal('10.251.0.0/20', 'br') },
    ],
    [
      'ptp+ipMasq',
      'ptp',
      'ptp-ipMasq',
      { type: 'ptp', ipMasq: true, ipam: hostLocal('10.252.0.0/20', 'masq') },
    ],
  ];
  for (const [name, type, podDir, conf] of refs) {
    const node = pool.add('rn');
    plugins.push({
      name,
      binary: join(binDir, type),
      node,
      runner: new NsRunner(node.name),
      conf: { cniVersion: '1.0.0', name: `bench-${name.replace('+', '-')}`, ...conf },
      podDir: podPins.dir(podDir),
      settle: () => waitLinks(node.name, 'veth'),
    });
  }
  const selected =
    opts.only === undefined ? plugins : plugins.filter((p) => opts.only!.split(',').includes(p.name));
  if (RUNS % selected.length !== 0) {
    process.stderr.write(
      `note: --runs ${RUNS} is not a multiple of the ${selected.length} plugins: some open the runs' phases more often\n`,
    );
  }
  // Warm-up: page cache for the ~100 MB shim, the agent's JIT, iptables chains for ipMasq.
  for (const p of selected) await concurrentRound(p);
  // The agent's idle CPU, subtracted from its CPU over the runs (which the other plugins' rounds and
  // the pauses between them fill with idle time) to give its CPU per call. Per-thread schedstat (ns),
  // for all threads and the JS thread alike, so that the two figures subtract the same idle: clock
  // ticks (10 ms) cannot time a window this short. Measured 2 s after the warm-up, whose tail (veths
  // deleted in the background, a collection) had made the idle rate look several times higher than
  // it is and the all-threads figure come out below the JS thread's alone; and as the quietest of five
  // 1-second windows, since V8's memory reducer runs a collection a few seconds after the warm-up's
  // garbage (7.7-8.8 ms/s over one 5-second window, against ~0.9 without it: bench/HISTORY.md). Idle
  // work that does come (a resync pass, malloc_trim) is then counted against the calls, not for them.
  if (selected.some((p) => p.name === 'trellis')) {
    await sleep(2000);
    for (let w = 0; w < 5; w++) {
      const all0 = liveThreadsCpuMs(a.child.pid!);
      const js0 = mainThreadCpuMs(a.child.pid!);
      const t0 = performance.now();
      await sleep(1000);
      const ms = performance.now() - t0;
      const rate = {
        all: (liveThreadsCpuMs(a.child.pid!) - all0) / ms,
        js: (mainThreadCpuMs(a.child.pid!) - js0) / ms,
      };
      if (w === 0 || rate.all < agentIdle.all) agentIdle = rate;
    }
  }
  const logStart = a.logs.length;
  const trellisSelected = selected.some((p) => p.name === 'trellis');
  for (let run = 0; run < RUNS; run++) {
    const runStart = performance.now();
    const allMs0 = trellisSelected ? liveThreadsCpuMs(a.child.pid!) : 0;
    const jsMs0 = trellisSelected ? mainThreadCpuMs(a.child.pid!) : 0;
    const order = selected.map((_, i) => selected[(i + run) % selected.length]!);
    const sequential = new Map<string, SequentialRound>();
    if (opts.interleave === 'pods') {
      const from = a.logs.length;
      for (const [name, r] of await sequentialRound(selected, run)) sequential.set(name, r);
      sequentialLogs.push([from, a.logs.length]);
      await sleep(300); // let the kernel's namespace cleanup run outside the next round
    }
    for (const p of order) {
      if (opts.interleave === 'rounds') {
        const from = a.logs.length;
        sequential.set(p.name, (await sequentialRound([p], 0)).get(p.name)!);
        sequentialLogs.push([from, a.logs.length]);
        await sleep(300);
      }
    }
    // The bursts, interleaved plugin by plugin, the order rotating each burst.
    const walls = new Map<string, number[]>(selected.map((p) => [p.name, []]));
    for (let b = 0; b < BURSTS; b++) {
      for (let k = 0; k < order.length; k++) {
        const p = order[(k + b) % order.length]!;
        walls.get(p.name)!.push(await concurrentRound(p));
        await sleep(300);
      }
    }
    for (const p of order) {
      const { add, addSpawned, del, delAllGone } = sequential.get(p.name)!;
      const concurrentWalls = walls.get(p.name)!;
      const list = samples.get(p.name) ?? [];
      list.push({ add, addSpawned, del, delAllGone, concurrentWalls });
      samples.set(p.name, list);
      process.stderr.write(
        `run ${run + 1}/${RUNS} ${p.name}: ADD p50 ${round(median(add))} ms, DEL p50 ${round(median(del))} ms, ${CONCURRENT}x ADD ${round(median(concurrentWalls))} ms (median of ${concurrentWalls.length})\n`,
      );
    }
    if (trellisSelected) {
      // The whole run, less what the agent spends idle (~0.3 % of a core) over it.
      const wall = performance.now() - runStart;
      agentCpuMs += liveThreadsCpuMs(a.child.pid!) - allMs0 - agentIdle.all * wall;
      agentJsThreadMs += mainThreadCpuMs(a.child.pid!) - jsMs0 - agentIdle.js * wall;
      agentCalls += 2 * (PODS + CONCURRENT * BURSTS);
    }
  }
  for (const l of a.logs.slice(logStart)) {
    if (l.msg === 'CNI ADD ok') agentAddMs.push(Number(l.durationMs));
    if (l.msg === 'CNI ADD ok' && l.preparedVeth === true) agentPreparedAdds++;
    if (l.msg === 'CNI DEL ok') agentDelMs.push(Number(l.durationMs));
  }
  for (const [from, to] of sequentialLogs) {
    for (const l of a.logs.slice(from, to))
      if (l.msg === 'CNI ADD ok') agentSequentialAddMs.push(Number(l.durationMs));
  }
} finally {
  for (const p of plugins) p.runner.close();
  if (agent !== undefined) {
    await Promise.race([agent.stop(), sleep(10_000)]); // SIGTERM first: lets --cpu-prof write its profile
    await agent.kill();
  }
  // The pins before their staging namespaces (teardown never throws).
  pins?.teardown();
  for (const name of podNs) delNetns(name);
  pool.cleanup();
  if (agent !== undefined) removeAgentDir(agent.dir);
  rmSync(tmp, { recursive: true, force: true });
}

interface Summary {
  addP50: number;
  addP99: number;
  delP50: number;
  delP99: number;
  /** Median over runs of the DEL round until every veth is gone (trellis's background deletions included). */
  delAllGone: number;
  concurrentWall: number;
  addAll: number[];
  /** ADD p50 from the plugin's spawn, not the pin (the agent's head start left in). */
  addSpawnedP50: number;
}
const summary: Record<string, Summary> = {};
for (const [name, list] of samples) {
  const addAll = list.flatMap((s) => s.add);
  const delAll = list.flatMap((s) => s.del);
  summary[name] = {
    addP50: round(median(list.map((s) => median(s.add)))),
    addP99: round(pct(addAll, 99)),
    delP50: round(median(list.map((s) => median(s.del)))),
    delP99: round(pct(delAll, 99)),
    delAllGone: round(median(list.map((s) => s.delAllGone))),
    // Every burst of every run, pooled: a run has only a few.
    concurrentWall: round(median(list.flatMap((s) => s.concurrentWalls))),
    addAll: addAll.map((x) => round(x)),
    addSpawnedP50: round(median(list.map((s) => median(s.addSpawned)))),
  };
}
const t = summary.trellis;
const ratios: Record<string, Record<string, number>> = {};
if (t !== undefined) {
  for (const [name, s] of Object.entries(summary)) {
    if (name === 'trellis') continue;
    const tr = samples.get('trellis')!;
    const rf = samples.get(name)!;
    ratios[name] = {
      // Run i of trellis against run i of the reference (adjacent in time): robust to drifting load.
      addP50Paired: ratio(median(tr.map((x, i) => median(x.add) / median(rf[i]!.add))), 1),
      delP50Paired: ratio(median(tr.map((x, i) => median(x.del) / median(rf[i]!.del))), 1),
      concurrentWallPaired: ratio(
        median(tr.map((x, i) => median(x.concurrentWalls) / median(rf[i]!.concurrentWalls))),
        1,
      ),
      addP50: ratio(t.addP50, s.addP50),
      addSpawnedP50: ratio(t.addSpawnedP50, s.addSpawnedP50),
      addP99: ratio(t.addP99, s.addP99),
      delP50: ratio(t.delP50, s.delP50),
      delAllGone: ratio(t.delAllGone, s.delAllGone),
      concurrentWall: ratio(t.concurrentWall, s.concurrentWall),
    };
  }
}
const commit = commitId();
const agentCpuMsPerCall = agentCalls === 0 ? 0 : round(agentCpuMs / agentCalls, 3);
const agentJsThreadMsPerCall = agentCalls === 0 ? 0 : round(agentJsThreadMs / agentCalls, 3);
process.stdout.write(
  `${table(
    [
      'plugin',
      'ADD p50 ms',
      'ADD p99 ms',
      'DEL p50 ms',
      'DEL p99 ms',
      `${PODS} DELs, all veths gone, ms`,
      `${CONCURRENT}x ADD wall ms`,
    ],
    Object.entries(summary).map(([n, s]) => [
      n,
      s.addP50,
      s.addP99,
      s.delP50,
      s.delP99,
      s.delAllGone,
      s.concurrentWall,
    ]),
  )}\n\n${table(
    [
      'trellis / ref',
      'ADD p50',
      'paired',
      'from spawn',
      'ADD p99',
      'DEL p50',
      'paired',
      'DELs, veths gone',
      `${CONCURRENT}x ADD wall`,
      'paired',
    ],
    Object.entries(ratios).map(([n, r]) => [
      n,
      r.addP50!,
      r.addP50Paired!,
      r.addSpawnedP50!,
      r.addP99!,
      r.delP50!,
      r.delP50Paired!,
      r.delAllGone!,
      r.concurrentWall!,
      r.concurrentWallPaired!,
    ]),
  )}\n\nagent-side ADD p50 ${round(median(agentAddMs))} ms p99 ${round(pct(agentAddMs, 99))} ms (sequential alone p50 ${round(median(agentSequentialAddMs))} p99 ${round(pct(agentSequentialAddMs, 99))} ms; ${agentPreparedAdds} of ${agentAddMs.length} with their veth pair prepared); DEL p50 ${round(median(agentDelMs))} ms; agent CPU ${agentCpuMsPerCall} ms per CNI call, its JS thread ${agentJsThreadMsPerCall} ms, idle subtracted (commit ${commit}, ${RUNS} runs x ${PODS} pods, interleaved by ${opts.interleave}, ${GAP_MS} ms before each, ${BURSTS} bursts per run)\n`,
);
writeResult(
  opts.out,
  'cni-latency',
  commit,
  {
    /** What a sequential ADD's time (addAll, addP50, addP99) starts from: its pod's namespace pinned. */
    addTimedFrom: 'pin',
    runs: RUNS,
    interleave: opts.interleave,
    pods: PODS,
    concurrent: CONCURRENT,
    /** Concurrent bursts per plugin per run (their wall times pooled over the runs). */
    bursts: BURSTS,
    /** The quiet gap before every sequential ADD, ms. */
    gapMs: GAP_MS,
    summary,
    ratios,
    agentSide: {
      addP50: round(median(agentAddMs)),
      addP99: round(pct(agentAddMs, 99)),
      /** The sequential rounds' ADDs alone (the bursts' include waiting behind each other). */
      sequentialAddP50: round(median(agentSequentialAddMs)),
      sequentialAddP99: round(pct(agentSequentialAddMs, 99)),
      /** ADDs whose veth pair the agent made when the pod's namespace appeared (--netns-dir). */
      preparedAdds: agentPreparedAdds,
      delP50: round(median(agentDelMs)),
      /**
       * The agent's CPU time over the runs (ADDs and DELs, sequential and concurrent), less its idle
       * rate over them, per call.
       */
      cpuMsPerCall: agentCpuMsPerCall,
      jsThreadCpuMsPerCall: agentJsThreadMsPerCall,
      idleCpuMsPerSecond: { all: round(agentIdle.all * 1000, 3), js: round(agentIdle.js * 1000, 3) },
    },
  },
  { summary: Object.fromEntries(Object.entries(summary).map(([k, v]) => [k, { ...v, addAll: undefined }])) },
);
