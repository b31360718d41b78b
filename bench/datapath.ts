/**
 * Datapath throughput: iperf3 TCP between pods, against a plain veth pair between two namespaces
 * measured in the same run (rounds interleaved, median of the repetitions).
 *
 * Paths (all through the real agents and shim, via the multi-node test bed in test/support/testbed):
 * - same node: pod -> host veth -> routed -> host veth -> pod;
 * - direct: two nodes on one L2 segment (a bridge in a fabric namespace), routes via the peer's
 *   InternalIP, agents in Kubernetes mode with --mode auto;
 * - direct, --mode host-gw: the same two-node layout with direct routes only: no VXLAN device, no MSS
 *   clamp (auto gives pods the same full MTU and clamps TCP into its tunnels, docs/overlay.md#mtu);
 * - vxlan: the same two-node layout with --mode vxlan (when the agent supports it);
 * - node to node (underlay): the two nodes of the direct layout themselves, no pod involved. A path
 *   across nodes crosses the test bed's underlay (two more veths and a bridge) that the veth-pair
 *   reference does not, so it is also reported against this.
 * - same node, ptp: Debian's reference ptp + host-local plugins (MTU 1500) set up two more pods in the
 *   --no-masquerade node's namespace below, beside trellis's pods there: the reference plugin's
 *   same-node path in the very same node, next to the "same node, --no-masquerade" row; and two
 *   more in the node of the "same node" row, where the agent's masquerade table has connection
 *   tracking on for every packet, ptp's included;
 * - the same node and direct paths once more with agents run with --mode host-gw --no-masquerade: no
 *   nat hook in the node's namespace, so no connection tracking. Against the host-gw row it splits the
 *   cost of conntrack (which masquerading, and in a real cluster kube-proxy's NAT, switch on for every
 *   packet) from the path's own cost;
 * - across nodes, ptp: a second reference ptp pod on the other node of that test bed, and a static
 *   route on each node to the other's ptp subnet via its InternalIP: the reference plugin's pods
 *   routed across the very same underlay (what kindnet-style routing with ptp pods would be), next to
 *   the row above.
 *
 *   node_modules/.bin/node bench/datapath.ts [--seconds 5] [--reps 3] [--no-vxlan] [--out FILE]
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { addList, REFERENCE_PLUGIN_DIR } from '../test/support/cni-driver.ts';
import { ip, NetnsPool, nsPing } from '../test/support/netns.ts';
import { tempDir, undoOnSignals } from '../test/support/signal-undo.ts';
import { Testbed, type TestbedPod } from '../test/support/testbed/index.ts';
import { benchArgs, numberArg } from './lib/cli.ts';
import { commitId, median, ratio, round, sleep, table, writeResult } from './lib/stats.ts';

const SCRIPT = import.meta.filename;
const opts = benchArgs(SCRIPT, {
  seconds: { type: 'string', default: '5' },
  reps: { type: 'string', default: '3' },
  'no-vxlan': { type: 'boolean', default: false },
  out: { type: 'string', default: join(import.meta.dirname, 'results', 'datapath.json') },
});
// A signal (Ctrl-C, a job's timeout) undoes what the run made: namespaces, agents, temp dirs.
undoOnSignals();
const SECONDS = numberArg(SCRIPT, 'seconds', opts.seconds);
const REPS = numberArg(SCRIPT, 'reps', opts.reps);

/** One iperf3 TCP run from `clientNs` to `addr` (served from `serverNs`), in Gbit/s. */
async function iperf(clientNs: string, serverNs: string, addr: string): Promise<number> {
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', addr, '-p', '5201'], {
    stdio: 'ignore',
  });
  try {
    await sleep(300);
    const out = execFileSync(
      'ip',
      ['netns', 'exec', clientNs, 'iperf3', '-c', addr, '-p', '5201', '-t', String(SECONDS), '-J'],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    const j = JSON.parse(out) as { error?: string; end: { sum_received?: { bits_per_second: number } } };
    const bps = j.end.sum_received?.bits_per_second;
    if (bps === undefined) throw new Error(`iperf3 ${clientNs} -> ${addr}: ${j.error ?? 'no result'}`);
    return bps / 1e9;
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
  }
}

interface Path {
  name: string;
  run: () => Promise<number>;
}

const UNDERLAY = 'node to node (underlay)';
const HOST_GW = 'across nodes, direct, --mode host-gw';
const PTP_SAME = 'same node, ptp + host-local, in the --no-masquerade node';
const PTP_SAME_MASQ = 'same node, ptp + host-local, in the masquerading node';
const PTP_ACROSS = 'across nodes, ptp + host-local, static routes, no masquerade';
const NO_MASQ_SAME = 'same node, --no-masquerade';
const NO_MASQ_DIRECT = 'across nodes, direct, host-gw, --no-masquerade';
const pool = new NetnsPool();
const beds: Testbed[] = [];
const results = new Map<string, number[]>();
const notMeasured: Record<string, string> = {};
const hostLocalDir = tempDir('trl-bench-hl-');
try {
  // Reference: a veth pair between two namespaces, nothing else.
  const a = pool.add('dpa');
  const b = pool.add('dpb');
  execFileSync('ip', [
    '-n',
    a.name,
    'link',
    'add',
    'v0',
    'type',
    'veth',
    'peer',
    'name',
    'v1',
    'netns',
    b.name,
  ]);
  ip(a.name, 'addr', 'add', '10.99.0.1/24', 'dev', 'v0');
  ip(b.name, 'addr', 'add', '10.99.0.2/24', 'dev', 'v1');
  ip(a.name, 'link', 'set', 'v0', 'up');
  ip(b.name, 'link', 'set', 'v1', 'up');
  const paths: Path[] = [{ name: 'veth pair (reference)', run: () => iperf(a.name, b.name, '10.99.0.2') }];

  const direct = await Testbed.create({ mode: 'auto', segments: [{ nodes: 2 }] });
  beds.push(direct);
  const [n1, n2] = direct.nodes();
  const p1: TestbedPod = await direct.addPod(n1!.name);
  const p2: TestbedPod = await direct.addPod(n1!.name);
  const p3: TestbedPod = await direct.addPod(n2!.name);
  paths.push({ name: 'same node', run: () => iperf(p1.ns, p2.ns, p2.v4) });
  paths.push({ name: 'across nodes, direct', run: () => iperf(p1.ns, p3.ns, p3.v4) });
  // The underlay alone (node to node over the test bed's veths and bridge): what a pod path across
  // nodes has to cross anyway, so pod / underlay is trellis's own cost there.
  paths.push({ name: UNDERLAY, run: () => iperf(n1!.ns, n2!.ns, n2!.plan.v4) });

  // host-gw: direct routes only: no VXLAN device and no MSS clamp chain (auto has both, and the same
  // full pod MTU), so against the auto row it shows what auto's readiness to tunnel costs.
  const hostGw = await Testbed.create({ mode: 'host-gw', segments: [{ nodes: 2 }] });
  beds.push(hostGw);
  const [h1, h2] = hostGw.nodes();
  const g1 = await hostGw.addPod(h1!.name);
  const g2 = await hostGw.addPod(h2!.name);
  paths.push({ name: HOST_GW, run: () => iperf(g1.ns, g2.ns, g2.v4) });

  const bare = await Testbed.create({
    mode: 'host-gw',
    segments: [{ nodes: 2 }],
    agentArgs: ['--no-masquerade'],
  });
  beds.push(bare);
  const [m1, m2] = bare.nodes();
  const r1 = await bare.addPod(m1!.name);
  const r2 = await bare.addPod(m1!.name);
  const r3 = await bare.addPod(m2!.name);
  // No nat chain, so no connection tracking. The table itself stays for the source check (a filter
  // chain at raw priority, no conntrack): the row keeps what a --no-masquerade node runs with.
  const ruleset = execFileSync('ip', ['netns', 'exec', m1!.ns, 'nft', 'list', 'ruleset'], {
    encoding: 'utf8',
  });
  if (/type nat|\bct\b|masquerade/.test(ruleset))
    throw new Error(`--no-masquerade node still tracks connections: ${ruleset}`);
  paths.push({ name: NO_MASQ_SAME, run: () => iperf(r1.ns, r2.ns, r2.v4) });
  paths.push({ name: NO_MASQ_DIRECT, run: () => iperf(r1.ns, r3.ns, r3.v4) });

  if (existsSync(join(REFERENCE_PLUGIN_DIR, 'ptp'))) {
    // One host-local network (name and subnet) per node, each node routing to the other's subnet
    // through its InternalIP.
    const nets = new Map([
      [m1!.ns, { name: 'bench-ptp-n1', subnet: '10.251.0.0/24' }],
      [m2!.ns, { name: 'bench-ptp-n2', subnet: '10.252.0.0/24' }],
      [n1!.ns, { name: 'bench-ptp-d1', subnet: '10.253.0.0/24' }],
    ]);
    const ptpPod = async (tag: string, nodeNs: string): Promise<{ ns: string; v4: string }> => {
      const net = nets.get(nodeNs)!;
      const list = {
        cniVersion: '1.0.0',
        name: net.name,
        plugins: [
          {
            type: 'ptp',
            ipam: {
              type: 'host-local',
              subnet: net.subnet,
              routes: [{ dst: '0.0.0.0/0' }],
              dataDir: hostLocalDir,
            },
          },
        ],
      };
      const pod = pool.add(tag);
      const run = await addList(list, {
        containerId: pod.name,
        netns: `/var/run/netns/${pod.name}`,
        ifname: 'eth0',
        hostNetns: nodeNs,
      });
      const result = run.json as { ips?: { address: string }[] } | undefined;
      const addr = result?.ips?.[0]?.address.split('/')[0];
      if (run.code !== 0 || addr === undefined) throw new Error(`ptp ADD failed: ${run.stdout}${run.stderr}`);
      return { ns: pod.name, v4: addr };
    };
    const q1 = await ptpPod('dpptp1', m1!.ns);
    const q2 = await ptpPod('dpptp2', m1!.ns);
    const q3 = await ptpPod('dpptp3', m2!.ns);
    ip(m1!.ns, 'route', 'add', nets.get(m2!.ns)!.subnet, 'via', m2!.plan.v4);
    ip(m2!.ns, 'route', 'add', nets.get(m1!.ns)!.subnet, 'via', m1!.plan.v4);
    paths.push({ name: PTP_SAME, run: () => iperf(q1.ns, q2.ns, q2.v4) });
    paths.push({ name: PTP_ACROSS, run: () => iperf(q1.ns, q3.ns, q3.v4) });
    // ptp's pods beside trellis's "same node" pods: connection tracking on for both (the agent's
    // masquerade table; ptp's own addresses are not masqueraded between each other).
    const q4 = await ptpPod('dpptp4', n1!.ns);
    const q5 = await ptpPod('dpptp5', n1!.ns);
    paths.push({ name: PTP_SAME_MASQ, run: () => iperf(q4.ns, q5.ns, q5.v4) });
  } else
    notMeasured.ptp = `${REFERENCE_PLUGIN_DIR}/ptp is missing (apt-get install containernetworking-plugins)`;

  if (opts['no-vxlan']) notMeasured.vxlan = 'skipped (--no-vxlan)';
  else {
    try {
      const vx = await Testbed.create({ mode: 'vxlan', segments: [{ nodes: 2 }] });
      beds.push(vx);
      const [v1, v2] = vx.nodes();
      const q1 = await vx.addPod(v1!.name);
      const q2 = await vx.addPod(v2!.name);
      // A ping, not an iperf3 run: no path gets an untimed warm-up the others do not.
      if (!nsPing(q1.ns, q2.v4)) throw new Error('the overlay does not carry traffic (ping failed)');
      paths.push({ name: 'across nodes, vxlan', run: () => iperf(q1.ns, q2.ns, q2.v4) });
    } catch (err) {
      notMeasured.vxlan = `not measured: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
      process.stderr.write(`vxlan: ${notMeasured.vxlan}\n`);
    }
  }

  for (let rep = 0; rep < REPS; rep++) {
    const order = paths.map((_, i) => paths[(i + rep) % paths.length]!);
    for (const p of order) {
      const gbps = await p.run();
      results.set(p.name, [...(results.get(p.name) ?? []), gbps]);
      process.stderr.write(`rep ${rep + 1}/${REPS} ${p.name}: ${round(gbps)} Gbit/s\n`);
    }
  }
} finally {
  for (const bed of beds) await bed.teardown().catch(() => {});
  pool.cleanup(); // the ptp pods' veths go with their namespaces
  rmSync(hostLocalDir, { recursive: true, force: true });
}

const ref = median(results.get('veth pair (reference)') ?? []);
const underlay = median(results.get(UNDERLAY) ?? []);
const refRuns = results.get('veth pair (reference)') ?? [];
const summary: Record<
  string,
  { gbps: number; runs: number[]; ratio: number; pairedRatio?: number; vsUnderlay?: number }
> = {};
for (const [name, runs] of results) {
  summary[name] = {
    gbps: round(median(runs)),
    runs: runs.map((x) => round(x)),
    ratio: ratio(median(runs), ref),
    // Repetition i against the veth pair's repetition i (the same round, minutes apart at most).
    ...(refRuns.length === runs.length
      ? { pairedRatio: ratio(median(runs.map((x, i) => x / refRuns[i]!)), 1) }
      : {}),
    ...(name.startsWith('across nodes') ? { vsUnderlay: ratio(median(runs), underlay) } : {}),
  };
}
const commit = commitId();
process.stdout.write(
  `${table(
    ['path', 'Gbit/s (median)', 'vs veth pair', 'paired', 'vs underlay', 'runs'],
    Object.entries(summary).map(([n, s]) => [
      n,
      s.gbps,
      s.ratio,
      s.pairedRatio ?? '',
      s.vsUnderlay ?? '',
      s.runs.join(' '),
    ]),
  )}\n${Object.entries(notMeasured)
    .map(([k, v]) => `${k}: ${v}\n`)
    .join('')}(iperf3 TCP, ${SECONDS} s per run, ${REPS} reps, commit ${commit})\n`,
);
writeResult(opts.out, 'datapath', commit, {
  seconds: SECONDS,
  reps: REPS,
  summary,
  notMeasured,
});
