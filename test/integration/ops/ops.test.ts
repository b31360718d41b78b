import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminGet, defaultAdminSocket } from '../../../pkg/ops/admin-client.ts';
import type { CoverageReport } from '../../../pkg/ops/coverage.ts';
import type { DoctorReport } from '../../../pkg/ops/doctor.ts';
import type { LeasesView, RoutesView, StatusView } from '../../../pkg/ops/views.ts';
import { AGENT_BINARY, delList, SHIM_BINARY } from '../../support/cni-driver.ts';
import { delNetns, ip, ipJson, nsExec, nsPing, nsSysctl } from '../../support/netns.ts';
import {
  Testbed,
  type TestbedNode,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';
import { nodeObject } from '../../support/testbed/plan.ts';
import { parseExposition } from '../../unit/observe/prom-text.ts';
import { nftTable } from '../faults/support.ts';

/**
 * The operator's view against real agents: a two-node test bed (Kubernetes mode, test API server),
 * metrics scraped from inside a node namespace on the agent's --metrics-addr, the CLI run inside
 * the node namespace against the agent's admin socket, and faults injected by hand into the node.
 */
const skip = testbedSkipReason();
const RESYNC_S = 4;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `trellis-agent ARGS` inside the node's namespace, as `kubectl exec ds/trellis -- trellis-agent` would. */
function cli(node: TestbedNode, ...args: string[]): CliRun {
  const r = spawnSync('ip', ['netns', 'exec', node.ns, AGENT_BINARY, ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cliJson<T>(
  node: TestbedNode,
  cmd: string,
  ...args: string[]
): { code: number | null; doc: T; run: CliRun } {
  const run = cli(node, cmd, '--socket', node.agent!.socket, '--json', ...args);
  let doc: T;
  try {
    doc = JSON.parse(run.stdout) as T;
  } catch {
    throw new Error(`${cmd}: not JSON (exit ${run.code}): ${run.stdout}\n${run.stderr}`);
  }
  return { code: run.code, doc, run };
}

function doctor(node: TestbedNode): { code: number | null; report: DoctorReport; text: string } {
  const { code, doc, run } = cliJson<DoctorReport>(node, 'doctor');
  return { code, report: doc, text: `${run.stdout}${run.stderr}` };
}

function findings(r: DoctorReport, check: string): string[] {
  return r.checks.find((c) => c.name === check)?.findings.map((f) => `${f.problem} | fix: ${f.fix}`) ?? [];
}

/** Pods made and then all deleted at once for the drain test. */
const DRAIN_PODS = 15;

/** cli() without blocking the event loop: its stdout (the exit code is not checked). */
function cliAsync(node: TestbedNode, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ['netns', 'exec', node.ns, AGENT_BINARY, ...args],
      { encoding: 'utf8', timeout: 30_000 },
      (err, stdout) => (stdout === '' && err !== null ? reject(err) : resolve(stdout)),
    );
  });
}

/** The command a finding's fix starts with (what precedes its first parenthesis), from findings()'s text. */
function fixCommand(finding: string): string {
  return finding.slice(finding.indexOf(' | fix: ') + ' | fix: '.length).split(' (')[0]!;
}

async function until<T>(what: string, timeoutMs: number, fn: () => T, ok: (v: T) => boolean): Promise<T> {
  const start = Date.now();
  let v = fn();
  while (!ok(v)) {
    if (Date.now() - start > timeoutMs)
      throw new Error(`${what}: not reached in ${timeoutMs} ms; last: ${JSON.stringify(v)}`);
    await sleep(200);
    v = fn();
  }
  return v;
}

function curl(node: TestbedNode, path: string): { status: number; body: string } {
  const out = nsExec(node.ns, 'curl', [
    '-s',
    '-m',
    '5',
    '-w',
    '\n%{http_code}',
    `http://${node.plan.v4}:9743${path}`,
  ]);
  const nl = out.lastIndexOf('\n');
  return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
}

const title = 'ops: metrics, health, admin CLI, doctor and coverage against real agents';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let n1: TestbedNode;
  let n2: TestbedNode;
  const pods: TestbedPod[] = [];

  beforeAll(async () => {
    tb = await Testbed.create({
      segments: [{ nodes: 2 }],
      agentArgs: ['--resync-seconds', String(RESYNC_S), '--firewall-check-seconds', '1'],
      // A proxy client-go would take for the test bed's plain-http API server; the agents do not go
      // through it (nothing listens there) and say so at start. Every test below runs with it set.
      agentEnv: { HTTP_PROXY: 'http://user:secret@proxy.invalid:3128' },
    });
    [n1, n2] = tb.nodes() as [TestbedNode, TestbedNode];
    for (let i = 0; i < 3; i++) pods.push(await tb.addPod(n1.name));
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('/metrics counts what happened: 3 ADDs -> ADD counter 3, histogram count 3, IPAM used 3 per family', () => {
    const r = curl(n1, '/metrics');
    expect(r.status).toBe(200);
    const m = parseExposition(r.body);
    expect(m.get('trellis_cni_calls_total', { verb: 'ADD', outcome: 'ok' })).toBe(3);
    expect(m.get('trellis_cni_call_duration_seconds_count', { verb: 'ADD' })).toBe(3);
    expect(m.get('trellis_cni_call_duration_seconds_bucket', { verb: 'ADD', le: '+Inf' })).toBe(3);
    expect(m.get('trellis_cni_call_duration_seconds_sum', { verb: 'ADD' })).toBeGreaterThan(0);
    expect(m.get('trellis_ipam_used', { family: '4', range: n1.plan.podCIDRs[0] })).toBe(3);
    expect(m.get('trellis_ipam_used', { family: '6', range: n1.plan.podCIDRs[1] })).toBe(3);
    expect(m.get('trellis_ipam_capacity', { family: '4', range: n1.plan.podCIDRs[0] })).toBe(253);
    expect(m.get('trellis_agent_ready')).toBe(1);
    expect(m.all('trellis_host_firewall_drops')).toEqual([]);
    expect(m.get('trellis_node_watch_restarts_total')).toBe(0);
    // The test API server answers Nodes in protobuf, as kube-apiserver does.
    expect(m.all('trellis_node_watch_encoding').map((x) => [x.labels, x.value])).toEqual([
      [{ encoding: 'protobuf' }, 1],
    ]);
    // n2 is fully routed in both families: counted, and no per-peer series.
    expect(m.get('trellis_peers', { family: '4', path: 'direct', state: 'ok' })).toBe(1);
    expect(m.get('trellis_peers', { family: '6', path: 'direct', state: 'ok' })).toBe(1);
    expect(m.all('trellis_peer_route_broken')).toEqual([]);
    expect(m.get('trellis_reconcile_total', { outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(
      m.get('trellis_build_info', {
        version: JSON.parse(readFileSync(join(import.meta.dirname, '../../../package.json'), 'utf8')).version,
      }),
    ).toBe(1);
    // The other node saw no CNI call at all: every verb's series is there, at 0 (so an alert on the
    // first error sees an increase).
    const other = parseExposition(curl(n2, '/metrics').body);
    const calls = other.all('trellis_cni_calls_total');
    expect(calls.length).toBe(10);
    expect(calls.every((c) => c.value === 0)).toBe(true);
    expect(other.get('trellis_ipam_used', { family: '4' })).toBe(0);
  });

  it('warns at start that HTTP_PROXY names a proxy it does not go through, without its credentials', () => {
    const warned = n1.logs.filter((l) =>
      String(l.msg).startsWith('HTTP_PROXY names a proxy for the API server'),
    );
    expect(warned.map((l) => [l.level, l.variable, l.proxy])).toEqual([
      ['warn', 'HTTP_PROXY', 'http://proxy.invalid:3128'],
    ]);
    expect(JSON.stringify(n1.logs)).not.toContain('secret');
  });

  it('/healthz and /readyz answer 200 with their checks on a ready node', () => {
    const h = curl(n1, '/healthz');
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toEqual({ status: 'ok', checks: { eventLoop: 'ok' } });
    const r = curl(n1, '/readyz');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({
      status: 'ok',
      checks: { agent: 'ok', reconcile: 'ok', nodeWatch: 'ok' },
    });
  });

  it('status, routes and leases print what the agent and the kernel have', () => {
    const st = cliJson<StatusView>(n1, 'status');
    expect(st.code).toBe(0);
    expect(st.doc).toMatchObject({
      node: n1.name,
      ready: true,
      podCIDRs: [...n1.plan.podCIDRs],
      internalIPs: [n1.plan.v4, n1.plan.v6],
      leases: 3,
      standalone: false,
    });
    const human = cli(n1, 'status', '--socket', n1.agent!.socket);
    expect(human.stdout).toMatch(new RegExp(`^node:\\s+${n1.name}$`, 'm'));
    // auto mode: pods at the full MTU, TCP clamped into the tunnels.
    expect(human.stdout).toMatch(/^pod MTU:\s+1500$/m);
    expect(human.stdout).toMatch(/^TCP MSS clamp:\s+SYNs into trellis\.v4, trellis\.v6 \(route MTU\)$/m);
    // The Node watch, with the events it read and let go (this test bed's own status writes count).
    expect(st.doc.watch).toMatchObject({
      synced: true,
      unchangedEvents: expect.any(Number),
      encoding: 'protobuf',
    });
    expect(human.stdout).toMatch(
      /^node watch:\s+synced, .* lists, \d+ unchanged Node events skipped, last API answer \d+ s ago, Nodes in protobuf$/m,
    );
    expect(st.doc.mssClamp).toEqual(['trellis.v4', 'trellis.v6']);
    // The host's own firewall, read at start: nothing in the test bed drops forwarded traffic.
    expect(st.doc.forwardFirewall).toMatchObject({ checkedAt: expect.any(String), blocks: [] });
    expect(human.stdout).toMatch(/^host firewall:\s+lets pod traffic through \(checked \d{4}-/m);

    const rt = cliJson<RoutesView>(n1, 'routes');
    expect(rt.code).toBe(0);
    expect(rt.doc.drift).toBe(0);
    const kernel = [
      ...ipJson<{ dst: string; gateway?: string; type?: string }[]>(
        n1.ns,
        '-4',
        'route',
        'show',
        'proto',
        '126',
      ),
      ...ipJson<{ dst: string; gateway?: string; type?: string }[]>(
        n1.ns,
        '-6',
        'route',
        'show',
        'proto',
        '126',
      ),
    ];
    const rows = rt.doc.routes.map((r) => [r.dst, r.state]);
    expect(rows).toEqual(
      expect.arrayContaining([
        [n2.plan.podCIDRs[0], 'ok'],
        [n2.plan.podCIDRs[1], 'ok'],
        [n1.plan.podCIDRs[0], 'ok'],
        [n1.plan.podCIDRs[1], 'ok'],
      ]),
    );
    for (const r of rt.doc.routes) {
      const k = kernel.find((x) => x.dst === r.dst);
      expect(k, r.dst).toBeDefined();
      if (r.want.startsWith('blackhole')) expect(k!.type).toBe('blackhole');
      else expect(r.have).toContain(`via ${k!.gateway}`);
    }
    expect(rt.doc.peers.map((p) => [p.node, p.family, p.path])).toEqual([
      [n2.name, 4, 'direct'],
      [n2.name, 6, 'direct'],
    ]);

    const ls = cliJson<LeasesView>(n1, 'leases');
    expect(ls.code).toBe(0);
    const links = ipJson<{ ifname: string }[]>(n1.ns, 'link', 'show').map((l) => l.ifname);
    expect(ls.doc.leases.map((l) => [l.podName, [...l.addresses].sort()]).sort()).toEqual(
      pods.map((p) => [p.name, [p.v4, p.v6].sort()]).sort(),
    );
    for (const l of ls.doc.leases) {
      expect(links).toContain(l.hostVeth);
      expect(l.netns).toBe(pods.find((p) => p.name === l.podName)!.netnsPath);
      // The agent's own verdict on the namespace, which doctor takes over its own view.
      expect(l.netnsAlive).toBe(true);
    }
    const table = cli(n1, 'leases', '--socket', n1.agent!.socket).stdout;
    for (const p of pods) expect(table).toContain(`default/${p.name}`);
  });

  it('doctor passes on the healthy node and exits 0', () => {
    const d = doctor(n1);
    expect(
      d.report.checks.filter((c) => c.findings.length > 0),
      d.text,
    ).toEqual([]);
    expect(d.code).toBe(0);
    const human = cli(n1, 'doctor', '--socket', n1.agent!.socket);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('no problems found');
  });

  it('doctor: IPv4 forwarding turned off', async () => {
    try {
      // The agent turns forwarding back on at its next check (every 5 s): a doctor that started after
      // that check, on a loaded machine, finds it on. Turned off again for such a run.
      const offThenDoctor = () => {
        nsSysctl(n1.ns, 'net.ipv4.ip_forward', '0');
        return doctor(n1);
      };
      let d = offThenDoctor();
      for (let attempt = 1; attempt < 5 && d.code === 0; attempt++) d = offThenDoctor();
      expect(d.code).toBe(1);
      expect(findings(d.report, 'forwarding').join('\n')).toMatch(
        /net\.ipv4\.ip_forward is 0.*fix: echo 1 > \/proc\/sys\/net\/ipv4\/ip_forward /,
      );
      // The fix as printed, in the namespace (the image has no sysctl: a shell and /proc/sys only).
      nsExec(n1.ns, 'sh', ['-c', fixCommand(findings(d.report, 'forwarding')[0]!)]);
      expect(doctor(n1).code).toBe(0);
    } finally {
      nsSysctl(n1.ns, 'net.ipv4.ip_forward', '1');
    }
    expect(doctor(n1).code).toBe(0);
  });

  /**
   * The cluster's pod network, which the agent accepts: one prefix per family over n1's and n2's pod
   * CIDRs (10.244.1.0/24 and 10.244.2.0/24; fd00:10:244:1::/64 and fd00:10:244:2::/64).
   */
  const POD_NETWORK = ['10.244.0.0/22', 'fd00:10:244::/62'] as const;

  /** What the agent says Docker's FORWARD policy DROP (forwardPolicy below) blocks on n1. */
  function dockerPolicyBlocks(): string[] {
    const [v4, v6] = POD_NETWORK;
    return [
      `ip filter FORWARD drops IPv4 packets from pods (${v4}): policy drop`,
      `ip filter FORWARD drops IPv4 packets to pods (${v4}): policy drop`,
      `ip6 filter FORWARD drops IPv6 packets from pods (${v6}): policy drop`,
      `ip6 filter FORWARD drops IPv6 packets to pods (${v6}): policy drop`,
    ];
  }

  /** Docker's FORWARD policy DROP on n1, through iptables-nft (legacy x_tables rules are invisible to nft). */
  function forwardPolicy(policy: 'DROP' | 'ACCEPT'): void {
    for (const tool of ['iptables-nft', 'ip6tables-nft']) {
      nsExec(n1.ns, tool, ['-P', 'FORWARD', policy]);
      if (policy === 'ACCEPT') nsExec(n1.ns, tool, ['-F', 'FORWARD']);
    }
  }

  it("a host firewall dropping what the node forwards (Docker's FORWARD policy DROP): the agent accepts the cluster's pod network there, once", async () => {
    const pod = pods[0]!;
    const mark = n1.logs.length;
    const [v4] = POD_NETWORK;
    forwardPolicy('DROP');
    try {
      // iptables-nft and ip6tables-nft change the two families one after the other: a check may run
      // between them and accept one family's drops, the next check the other's.
      const dropped = (): Record<string, unknown>[] =>
        n1.logs.slice(mark).filter((l) => String(l.msg).startsWith('the host firewall dropped pod traffic'));
      const blocked = (): string[] =>
        dropped()
          .flatMap((l) => l.blocked as string[])
          .sort();
      await until('the accept rules', 10_000, blocked, (b) => b.length >= 4);
      expect(blocked()).toEqual([...dockerPolicyBlocks()].sort());
      for (const l of dropped()) expect(l).toMatchObject({ level: 'warn' });
      expect(dropped().flatMap((l) => l.inserted as string[])).toHaveLength(4);
      expect(dropped().filter((l) => l.stillBlocked !== undefined)).toEqual([]);
      // Both ways, both families, through n1's forward hook; iptables reads the rules as its own.
      expect(nsPing(pod.ns, n2.plan.v4)).toBe(true);
      expect(nsPing(n2.ns, pod.v6)).toBe(true);
      const rules = nsExec(n1.ns, 'iptables-nft', ['-S', 'FORWARD']);
      expect(rules).toContain(`-A FORWARD -s ${v4} -m comment --comment "trellis: pod traffic" -j ACCEPT`);
      expect(rules).toContain(`-A FORWARD -d ${v4} -m comment --comment "trellis: pod traffic" -j ACCEPT`);
      expect(cliJson<StatusView>(n1, 'status').doc.forwardFirewall).toMatchObject({ blocks: [] });
      expect(parseExposition(curl(n1, '/metrics').body).all('trellis_host_firewall_drops')).toEqual([]);
      // The next checks find nothing to do: no second insert, no warning.
      const lines = n1.logs.length;
      await sleep(2500);
      expect(n1.logs.slice(lines).filter((l) => l.level === 'warn')).toEqual([]);
      expect(
        nsExec(n1.ns, 'iptables-nft', ['-S', 'FORWARD'])
          .split('\n')
          .filter((l) => l.includes('trellis')),
      ).toHaveLength(2);
    } finally {
      forwardPolicy('ACCEPT');
    }
  });

  it('a forward chain handing packets to another program (NFQUEUE): status and doctor say it cannot be judged, never that it lets pods through', async () => {
    // --queue-bypass: accepted while nothing listens, so the other tests' traffic is unaffected.
    nsExec(n1.ns, 'iptables-nft', ['-I', 'FORWARD', '-j', 'NFQUEUE', '--queue-bypass']);
    try {
      const st = await until(
        'the undecided chain',
        10_000,
        () => cliJson<StatusView>(n1, 'status').doc.forwardFirewall,
        (f) => (f?.undecided ?? []).length > 0,
      );
      expect(st!.undecided).toEqual(['ip filter FORWARD']);
      expect(cli(n1, 'status', '--socket', n1.agent!.socket).stdout).toMatch(
        /^host firewall:\s+no drop of pod traffic found \(checked .*\); cannot judge ip filter FORWARD /m,
      );
      const d = doctor(n1);
      const check = d.report.checks.find((c) => c.name === 'firewall')!;
      expect(check.findings).toEqual([]);
      expect(check.skipped).toMatch(/^the agent cannot judge ip filter FORWARD \(/);
      expect(cli(n1, 'doctor', '--socket', n1.agent!.socket).stdout).toMatch(
        /^\[SKIP\] the host firewall lets pod traffic through .*\(the agent cannot judge ip filter FORWARD /m,
      );
    } finally {
      nsExec(n1.ns, 'iptables-nft', ['-D', 'FORWARD', '-j', 'NFQUEUE', '--queue-bypass']);
    }
  });

  it('with --no-accept-forward the agent only reports: the log, status, metric and doctor say where, and their fix lets pods through', async () => {
    await tb.restartAgent(n1.name, { args: ['--no-accept-forward'] });
    const pod = pods[0]!;
    const mark = n1.logs.length;
    const logged = (msg: RegExp) => n1.logs.slice(mark).find((l) => msg.test(String(l.msg)));
    forwardPolicy('DROP');
    try {
      // The real effect first: n1 routes nothing to or from its pods.
      expect(nsPing(pod.ns, n2.plan.v4)).toBe(false);
      expect(nsPing(n2.ns, pod.v6)).toBe(false);
      const warning = await until(
        'the firewall warning',
        10_000,
        () => logged(/^the host firewall drops pod traffic this node forwards/),
        (l) => l !== undefined,
      );
      expect(warning).toMatchObject({
        level: 'warn',
        blocked: dockerPolicyBlocks(),
      });
      expect(nsExec(n1.ns, 'iptables-nft', ['-S', 'FORWARD'])).not.toContain('trellis');
      const drops = parseExposition(curl(n1, '/metrics').body);
      expect(
        drops.get('trellis_host_firewall_drops', {
          family: '6',
          direction: 'to-pods',
          chain: 'ip6 filter FORWARD',
        }),
      ).toBe(1);
      expect(drops.all('trellis_host_firewall_drops')).toHaveLength(4);
      expect(cli(n1, 'status', '--socket', n1.agent!.socket).stdout).toMatch(
        /^host firewall:\s+DROPS pod traffic in ip filter FORWARD, ip6 filter FORWARD \(checked /m,
      );
      const d = doctor(n1);
      expect(d.code).toBe(1);
      expect(findings(d.report, 'firewall')).toHaveLength(4);
      expect(findings(d.report, 'firewall')[0]).toMatch(
        /^ip filter FORWARD drops IPv4 packets from pods .*: policy drop; IPv4 pod traffic cannot leave this node \| fix: iptables -I FORWARD -s /,
      );
      // The fix the log line gives, as an operator would paste it (iptables-nft by name, as above).
      for (const command of warning!.fix as string[]) {
        const [tool, ...args] = command.split(' ');
        nsExec(n1.ns, `${tool}-nft`, args);
      }
      expect(nsPing(pod.ns, n2.plan.v4)).toBe(true);
      expect(nsPing(n2.ns, pod.v6)).toBe(true);
      await until(
        'the all-clear',
        10_000,
        () => logged(/^the host firewall no longer drops pod traffic/),
        (l) => l !== undefined,
      );
      expect(findings(doctor(n1).report, 'firewall')).toEqual([]);
    } finally {
      forwardPolicy('ACCEPT');
      await tb.restartAgent(n1.name);
    }
    expect(doctor(n1).code).toBe(0);
  });

  it('doctor: strict rp_filter passes the paths trellis builds, so it is no finding', () => {
    const before = nsExec(n1.ns, 'sysctl', ['-n', 'net.ipv4.conf.all.rp_filter']).trim();
    nsSysctl(n1.ns, 'net.ipv4.conf.all.rp_filter', '1');
    try {
      // Into n1 through a pod veth (pod to pod, pod to a peer node) and through the uplink (peer to pod).
      expect(nsPing(pods[0]!.ns, pods[1]!.v4)).toBe(true);
      expect(nsPing(pods[0]!.ns, n2.plan.v4)).toBe(true);
      expect(nsPing(n2.ns, pods[0]!.v4)).toBe(true);
      const d = doctor(n1);
      expect(findings(d.report, 'rp-filter')).toEqual([]);
      expect(d.code).toBe(0);
    } finally {
      nsSysctl(n1.ns, 'net.ipv4.conf.all.rp_filter', before);
    }
  });

  it('doctor: the uplink losing its carrier (the switch port down) is named, with the peers it cuts off, before any route', async () => {
    // The fabric end of n1's eth0: down, n1's eth0 keeps its addresses and loses its carrier.
    const port = `n${n1.plan.index}`;
    const mark = n1.logs.length;
    ip(tb.fabricNs, 'link', 'set', port, 'down');
    try {
      const found = await until(
        'doctor names the carrier',
        10_000,
        () => findings(doctor(n1).report, 'routes'),
        (f) => f.length > 0 && f[0]!.includes('has no carrier'),
      );
      expect(found[0]).toMatch(
        new RegExp(`^eth0, the way to peers ${n2.name}, has no carrier .* \\| fix: check eth0's link`),
      );
      // The agent retries its pass (0.2 s, 0.4 s, ...): each failed route is logged once, not per pass.
      const failedPasses = () =>
        n1.logs.slice(mark).filter((l) => l.msg === 'reconciled' && Number(l.routeErrors) > 0).length;
      await until('two failed passes', 10_000, failedPasses, (n) => n >= 2);
      const lines = n1.logs.slice(mark).filter((l) => l.msg === 'route could not be programmed');
      expect(lines.length).toBeGreaterThan(0);
      expect(lines.map((l) => l.route).sort()).toEqual([...new Set(lines.map((l) => l.route))].sort());
    } finally {
      ip(tb.fabricNs, 'link', 'set', port, 'up');
    }
    await until(
      'doctor clean again',
      (RESYNC_S + 5) * 1000,
      () => doctor(n1).code,
      (c) => c === 0,
    );
    // The pass that put the routes back, read off the agent's log (its pipe drains between polls):
    // the failed passes' lines while the carrier was gone must not reach the tests after this one.
    await until(
      'a pass without route errors after the carrier came back',
      10_000,
      () => {
        const since = n1.logs.slice(mark);
        const up = since.findIndex((l) => String(l.msg).startsWith('a link routes to peers leave by is up'));
        return up >= 0 && since.slice(up).some((l) => l.msg === 'reconciled' && l.routeErrors === 0);
      },
      (done) => done,
    );
  });

  it('doctor: a route changed by hand to one trellis does not own (drift the agent will not overwrite)', async () => {
    const dst = n2.plan.podCIDRs[0];
    ip(n1.ns, 'route', 'replace', dst, 'via', n2.plan.v4, 'proto', 'static');
    try {
      const d = doctor(n1);
      expect(d.code).toBe(1);
      expect(findings(d.report, 'routes').join('\n')).toMatch(
        new RegExp(
          `route ${dst.replace(/\./g, '\\.')} is held by a route trellis does not own \\(via ${n2.plan.v4} dev eth0 proto 4\\)`,
        ),
      );
      const rt = cliJson<RoutesView>(n1, 'routes');
      expect(rt.code).toBe(1);
      expect(rt.doc.routes.find((r) => r.dst === dst)?.state).toBe('conflict');
    } finally {
      ip(n1.ns, 'route', 'del', dst, 'proto', 'static');
    }
    // The agent puts its own route back at its next pass.
    await until(
      'doctor clean again',
      (RESYNC_S + 5) * 1000,
      () => doctor(n1).code,
      (c) => c === 0,
    );
  });

  it("doctor: a foreign route on a nexthop object (a routing daemon's) in the way; its printed fix deletes it", async () => {
    const dst = n2.plan.podCIDRs[0];
    const nhid = '4242';
    ip(n1.ns, 'nexthop', 'add', 'id', nhid, 'via', n2.plan.v4, 'dev', 'eth0', 'proto', 'static');
    try {
      ip(n1.ns, 'route', 'replace', dst, 'nhid', nhid, 'proto', 'static');
      const found = findings(doctor(n1).report, 'routes');
      const held = found.find((x) => x.startsWith(`route ${dst} is held by a route trellis does not own`));
      expect(held, found.join('\n')).toBeDefined();
      // Run as printed, in the node's namespace: it must take the route away (a delete naming the
      // gateway fails with "No such process" on a route that names a nexthop object).
      const cmd = /\((ip route del [^)]*)\)/.exec(held!)?.[1];
      expect(cmd, held).toBeDefined();
      nsExec(n1.ns, 'sh', ['-c', cmd!]);
      expect(ipJson<{ protocol?: string }[]>(n1.ns, 'route', 'show', dst, 'proto', 'static')).toEqual([]);
    } finally {
      spawnSync('ip', ['-n', n1.ns, 'route', 'del', dst, 'proto', 'static'], { stdio: 'ignore' });
      ip(n1.ns, 'nexthop', 'del', 'id', nhid);
    }
    await until(
      'doctor clean again',
      (RESYNC_S + 5) * 1000,
      () => doctor(n1).code,
      (c) => c === 0,
    );
  });

  it('doctor: a route trellis cannot read (prohibit) holding a peer prefix is a conflict, not a missing route', async () => {
    const dst = n2.plan.podCIDRs[0]!;
    // With a holder field: the previous test's conflict (a readable static route) may still be on its way.
    const held = (l: Record<string, unknown>) =>
      l.msg === 'route not programmed: its prefix is held by a route trellis does not own' &&
      l.route === dst &&
      l.holder !== undefined;
    const from = n1.logs.length;
    ip(n1.ns, 'route', 'replace', 'prohibit', dst, 'proto', 'static');
    try {
      // The dump cannot show a prohibit route: the agent learns of it when its exclusive add is refused.
      await until(
        'doctor names the unreadable holder',
        (RESYNC_S + 5) * 1000,
        () => findings(doctor(n1).report, 'routes').join('\n'),
        (t) => t.includes(`route ${dst} is held by a multipath, unreachable, prohibit or throw route`),
      );
      expect(findings(doctor(n1).report, 'routes').join('\n')).toContain(`ip route show ${dst}`);
      const rt = cliJson<RoutesView>(n1, 'routes');
      expect(rt.doc.routes.find((r) => r.dst === dst)).toMatchObject({ state: 'conflict', unreadable: true });
      // The agent's log line (its stdout reaches the test bed a moment later).
      const line = await until(
        'the conflict in the agent log',
        (RESYNC_S + 5) * 1000,
        () => n1.logs.slice(from).find(held),
        (l) => l !== undefined,
      );
      expect(line).toMatchObject({ holder: expect.stringContaining('cannot read') });
      const since = n1.logs.slice(from);
      expect(since.filter((l) => l.msg === 'route could not be programmed' && l.route === dst)).toEqual([]);
    } finally {
      ip(n1.ns, 'route', 'del', dst);
    }
    await until(
      'doctor clean again',
      (RESYNC_S + 5) * 1000,
      () => doctor(n1).code,
      (c) => c === 0,
    );
  });

  it('doctor: the config list removed, and another one sorting first (Multus, which hands pods on, is none)', async () => {
    const conf = tb.conflistPath(n1.name);
    const confDir = join(conf, '..');
    // The agent writes the list back within 5 s (and at its next pass, every RESYNC_S here), which may
    // come between the removal and doctor's look: removed again, a few times at most.
    let d: ReturnType<typeof doctor> | undefined;
    for (let i = 0; i < 5 && d?.code !== 1; i++) {
      rmSync(conf, { force: true });
      d = doctor(n1);
    }
    expect(d?.code).toBe(1);
    expect(findings(d!.report, 'cni-config').join('\n')).toMatch(
      /10-trellis\.conflist is missing from .*: the runtime cannot create pod networks/,
    );

    // Multus (thick: the shim's config naming no network, its daemon hands pods to the next file) is a
    // supported setup: doctor, the agent's status and its metric agree that it shadows nothing. With a
    // network sorting between it and trellis, that one alone is named (Multus hands pods on to it).
    const multus = join(confDir, '00-multus.conf');
    const other = join(confDir, '05-bridge.conflist');
    const writeOther = () =>
      writeFileSync(
        other,
        JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'bridge' }] }),
      );
    writeFileSync(
      multus,
      JSON.stringify({ cniVersion: '0.3.1', name: 'multus-cni-network', type: 'multus-shim' }),
    );
    writeOther();
    try {
      // The agent republishes the list and judges the directory at its next pass (every RESYNC_S here).
      await until(
        'config list back, the agent naming 05-bridge.conflist',
        (RESYNC_S + 5) * 1000,
        () => existsSync(conf) && cliJson<StatusView>(n1, 'status').doc.cniConfigShadowedBy !== undefined,
        (v) => v,
      );
      expect(cliJson<StatusView>(n1, 'status').doc.cniConfigShadowedBy).toEqual(['05-bridge.conflist']);
      expect(findings(doctor(n1).report, 'cni-config').join('\n')).toMatch(
        /^05-bridge\.conflist sorts before 10-trellis\.conflist.*hands pods on to it.*fix: remove .*05-bridge\.conflist/,
      );
      rmSync(other);
      expect(findings(doctor(n1).report, 'cni-config')).toEqual([]);
      await until(
        'the agent names nothing with 00-multus.conf alone',
        (RESYNC_S + 5) * 1000,
        () => cliJson<StatusView>(n1, 'status').doc.cniConfigShadowedBy,
        (v) => v === undefined,
      );
      // Without Multus, a config sorting first is one to remove.
      rmSync(multus);
      writeOther();
      const d2 = doctor(n1);
      expect(d2.code).toBe(1);
      expect(findings(d2.report, 'cni-config').join('\n')).toMatch(
        /05-bridge\.conflist sorts before 10-trellis\.conflist.*fix: remove .*05-bridge\.conflist/,
      );
    } finally {
      rmSync(other, { force: true });
      rmSync(multus, { force: true });
    }
    expect(doctor(n1).code).toBe(0);
  });

  it('doctor: the installed plugin is not the agent version', () => {
    const bin = join(n1.dir, 'bin', 'trellis');
    writeFileSync(bin, '#!/bin/sh\necho "trellis 0.0.1"\n', { mode: 0o755 });
    try {
      const d = doctor(n1);
      expect(d.code).toBe(1);
      expect(findings(d.report, 'shim-version').join('\n')).toMatch(
        /trellis is version 0\.0\.1, the agent is \d+\.\d+\.\d+/,
      );
    } finally {
      copyFileSync(SHIM_BINARY, `${bin}.tmp`);
      spawnSync('mv', ['-f', `${bin}.tmp`, bin]);
    }
    expect(doctor(n1).code).toBe(0);
  });

  it('doctor: an orphan trellis veth without a lease', () => {
    const name = 'trl0123456789ab';
    ip(n1.ns, 'link', 'add', name, 'type', 'veth', 'peer', 'name', 'orphanpeer');
    try {
      const d = doctor(n1);
      expect(d.code).toBe(1);
      expect(findings(d.report, 'veths')).toEqual([
        `host veth ${name} has no lease: left over from an interrupted ADD or DEL | fix: ip link del ${name} (or restart the trellis pod: its start-up sweep removes it)`,
      ]);
    } finally {
      ip(n1.ns, 'link', 'del', name);
    }
    expect(doctor(n1).code).toBe(0);
  });

  it('doctor during a drain: a veth whose DEL released its lease and whose deletion is still under way is no orphan', async () => {
    const drained: TestbedPod[] = [];
    for (let i = 0; i < DRAIN_PODS; i++) drained.push(await tb.addPod(n1.name));
    // As a drain: every pod's DEL at once. DEL releases the lease and answers; the agent deletes the
    // veth pair after (15-33 ms each in the kernel, longer while many go). Doctor and the leases
    // view are asked again and again meanwhile.
    let draining = true;
    const orphans: string[] = [];
    let doctorRuns = 0;
    let inFlightSeen = 0;
    // Several doctors at once, each run a separate process (as an operator's): one lists the links
    // somewhere in the second or so the deletions take.
    const doctorLoops = [0, 1, 2, 3].map(async () => {
      while (draining) {
        const d = JSON.parse(
          await cliAsync(n1, 'doctor', '--socket', n1.agent!.socket, '--json'),
        ) as DoctorReport;
        doctorRuns++;
        orphans.push(...findings(d, 'veths'));
      }
    });
    // The leases view asked in a tight loop: the pairs it names on their way out.
    const admin = defaultAdminSocket(n1.agent!.socket);
    const leasesLoop = (async () => {
      while (draining) {
        const v = await adminGet<LeasesView>(admin, '/leases');
        if ((v.vethsInFlight ?? []).length > 0) inFlightSeen++;
        await sleep(2);
      }
    })();
    // The DELs alone first, all at once (the namespaces stay until the pairs are gone: deleting one
    // would take its pair with it), as a runtime's: the testbed's removePod runs them again (a no-op).
    await sleep(500); // the doctors started
    const del = (wave: TestbedPod[]) =>
      wave.map(async (p) => {
        const runs = await delList(
          tb.conflist(n1.name),
          {
            containerId: p.containerId,
            netns: p.netnsPath,
            ifname: 'eth0',
            args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${p.name}`,
            hostNetns: n1.ns,
            path: join(n1.dir, 'bin'),
          },
          p.result,
        );
        expect(runs.map((r) => r.code)).toEqual(runs.map(() => 0));
      });
    // In waves, as a drain's evictions come: the deletions of one still under way as the next starts.
    const waves: Promise<void>[] = [];
    for (let i = 0; i < drained.length; i += 5) {
      waves.push(...del(drained.slice(i, i + 5)));
      await sleep(150);
    }
    await Promise.all(waves);
    // Until every pair is gone: the deletions outlast the DELs.
    await until(
      'the drained veths gone',
      20_000,
      () =>
        ipJson<{ ifname: string }[]>(n1.ns, 'link', 'show').filter((l) => /^trl[0-9a-f]{12}$/.test(l.ifname))
          .length,
      (n) => n <= pods.length,
    );
    draining = false;
    await Promise.all([...doctorLoops, leasesLoop]);
    for (const p of drained) await tb.removePod(p);
    expect(doctorRuns).toBeGreaterThan(0);
    expect(inFlightSeen).toBeGreaterThan(0); // the race was there to be lost
    expect(orphans).toEqual([]);
  });

  it('doctor: a leaked lease (the pod namespace vanished without DEL); the agent restart sweeps it', async () => {
    const pod = pods.pop()!;
    delNetns(pod.ns); // the kernel destroys the veth pair with it
    // A second pod gone the same way whose lease record is torn as well: the restarted agent holds its
    // addresses (quarantined) until the rebuild finds no veth and releases them.
    const torn = pods.pop()!;
    delNetns(torn.ns);
    writeFileSync(
      join(n1.dir, 'state', 'ipam', 'leases', `${torn.containerId}@eth0.json`),
      `{"containerId": "${torn.containerId.slice(0, 6)}`,
    );
    const gone = cliJson<LeasesView>(n1, 'leases').doc.leases.find((l) => l.podName === pod.name);
    expect(gone?.netnsAlive).toBe(false);
    const d = doctor(n1);
    expect(d.code).toBe(1);
    const f = findings(d.report, 'leases').join('\n');
    expect(f).toContain(`of default/${pod.name} is leaked: its network namespace ${pod.netnsPath} is gone`);
    expect(f).toContain(pod.v4);
    await tb.restartAgent(n1.name);
    const after = doctor(n1);
    expect(
      after.report.checks.filter((c) => c.findings.length > 0),
      after.text,
    ).toEqual([]);
    expect(after.code).toBe(0);
    expect(cliJson<LeasesView>(n1, 'leases').doc.leases).toHaveLength(pods.length);
    // The new agent counted what its start-up sweep reclaimed.
    const m = parseExposition(curl(n1, '/metrics').body);
    expect(m.get('trellis_ipam_leases_reclaimed_total', { reason: 'startup-sweep' })).toBe(1);
    expect(m.get('trellis_ipam_leases_reclaimed_total', { reason: 'held-gone' })).toBe(1);
    expect(m.get('trellis_ipam_used', { family: '4' })).toBe(pods.length);
  });

  it('doctor without an agent: exit 1, says the admin socket is unreachable, still checks the host', async () => {
    await tb.stopAgent(n2.name);
    try {
      const stateDir = join(n2.dir, 'state');
      const run = cli(n2, 'doctor', '--socket', n2.agent!.socket, '--state-dir', stateDir, '--json');
      expect(run.code).toBe(1);
      const r = JSON.parse(run.stdout) as DoctorReport;
      expect(findings(r, 'agent').join('\n')).toMatch(/cannot reach the agent's admin socket/);
      // Forwarding is still checked, for the families of the pod CIDRs the agent saved in node.json.
      const forwarding = r.checks.find((c) => c.name === 'forwarding')!;
      expect(forwarding.skipped).toBeUndefined();
      expect(forwarding.title).toBe('IP forwarding on (IPv4 and IPv6)');
      // Without node.json nothing says which families need it: skipped, not guessed.
      const bare = JSON.parse(
        cli(n2, 'doctor', '--socket', n2.agent!.socket, '--state-dir', join(n2.dir, 'nowhere'), '--json')
          .stdout,
      ) as DoctorReport;
      expect(bare.checks.find((c) => c.name === 'forwarding')!.skipped).toMatch(/no usable node\.json/);
      expect(cli(n2, 'status', '--socket', n2.agent!.socket).code).toBe(1);
    } finally {
      await tb.startAgent(n2.name);
    }
  });

  it('coverage: every node covered, then a node without agent or routes and one without pod CIDR', async () => {
    const cov = (): { code: number | null; doc: CoverageReport } => {
      const run = cli(n1, 'coverage', '--kubeconfig', tb.kubeconfig, '--json');
      return { code: run.code, doc: JSON.parse(run.stdout) as CoverageReport };
    };
    const first = await until('coverage clean', 20_000, cov, (c) => c.code === 0);
    expect(first.doc.nodes.map((n) => [n.node, n.agent])).toEqual([
      [n1.name, 'ready'],
      [n2.name, 'ready'],
    ]);
    await tb.api.createNode({
      metadata: { name: 'ghost' },
      spec: { podCIDRs: ['10.244.99.0/24'] },
      status: { addresses: [{ type: 'InternalIP', address: '198.51.100.7' }] },
    });
    await tb.api.createNode({ metadata: { name: 'bare' }, spec: {}, status: {} });
    try {
      const gaps = await until(
        'ghost reported missing by both agents',
        20_000,
        cov,
        (c) => c.doc.nodes.find((n) => n.node === 'ghost')?.missingOn.length === 2,
      );
      expect(gaps.code).toBe(1);
      const by = Object.fromEntries(gaps.doc.nodes.map((n) => [n.node, n]));
      expect(by.ghost!.agent).toBe('absent');
      expect(by.ghost!.missingOn.sort()).toEqual([`${n1.name}/v4`, `${n2.name}/v4`]);
      expect(by.ghost!.problems.map((p) => p.problem).join('\n')).toMatch(/no trellis agent has reported/);
      expect(by.bare!.problems.map((p) => p.problem)).toContain(
        'the node has no pod CIDR (spec.podCIDRs is empty)',
      );
      expect(by[n1.name]!.problems).toEqual([]);
      const human = cli(n1, 'coverage', '--kubeconfig', tb.kubeconfig);
      expect(human.code).toBe(1);
      expect(human.stdout).toMatch(/^ghost\s+10\.244\.99\.0\/24\s+absent\s+-\s+/m);
      expect(human.stdout).toMatch(/2 of 4 nodes have gaps/);
    } finally {
      await tb.api.deleteNode('ghost');
      await tb.api.deleteNode('bare');
    }
    await until('coverage clean again', 20_000, cov, (c) => c.code === 0);
  });

  it('/readyz turns 503 with the reason while the own Node is gone from the API (ADD refused), 200 once it is back', async () => {
    await tb.api.deleteNode(n2.name);
    try {
      const r = await until(
        'readyz 503',
        20_000,
        () => curl(n2, '/readyz'),
        (x) => x.status === 503,
      );
      expect(JSON.parse(r.body)).toEqual({
        status: 'failing',
        checks: {
          // Its pod CIDR may go to another node meanwhile: no ADD is served from it.
          agent: `Node ${n2.name} is not in the API, or its object is unusable (see 'Node object skipped')`,
          reconcile: `the last reconcile pass is waiting: Node ${n2.name} is not in the API, or its object is unusable (see 'Node object skipped')`,
          nodeWatch: 'ok',
        },
      });
      // Liveness is unaffected: the process is fine.
      expect(curl(n2, '/healthz').status).toBe(200);
      const metrics = parseExposition(curl(n2, '/metrics').body);
      expect(metrics.get('trellis_reconcile_total', { outcome: 'waiting' })).toBeGreaterThanOrEqual(1);
      expect(metrics.get('trellis_agent_ready')).toBe(0);
      // status agrees with the socket: ADD is refused, so it is not said to be served.
      const human = cli(n2, 'status', '--socket', n2.agent!.socket);
      expect(human.code).toBe(1);
      expect(human.stdout).toMatch(/^ready:\s+no: agent: Node .* is not in the API.*\)$/m);
      expect(human.stdout).not.toMatch(/CNI ADD is served/);
      expect(cliJson<StatusView>(n2, 'status').doc.ready).toBe(false);
    } finally {
      await tb.api.createNode(nodeObject(n2.plan));
    }
    await until(
      'readyz 200',
      20_000,
      () => curl(n2, '/readyz').status,
      (c) => c === 200,
    );
  });
});

const rpTitle = 'ops: doctor names the strict rp_filter that drops traffic (VXLAN peers, --no-masquerade)';
describe.skipIf(skip !== undefined)(skip === undefined ? rpTitle : `${rpTitle} (skipped: ${skip})`, () => {
  it("a pod talking to a VXLAN peer's node address keeps its pod address: strict filtering drops it, doctor's fix lets it through", async () => {
    const tb = await Testbed.create({
      segments: [{ nodes: 2 }],
      mode: 'vxlan',
      agentArgs: ['--no-masquerade'],
    });
    try {
      const [n1, n2] = tb.nodes() as [TestbedNode, TestbedNode];
      // Masquerading off: the table holds the MSS clamp alone, and no nat chain (no connection tracking).
      const table = nftTable(tb, n1.name);
      expect(table).toMatch(/chain forward \{/);
      expect(table).not.toMatch(/\bnat\b|masquerade/);
      const pod = await tb.addPod(n1.name);
      await until(
        'pod -> node-2 address',
        20_000,
        () => nsPing(pod.ns, n2.plan.v4),
        (ok) => ok,
      );

      // node-2: the request comes in on eth0, its source (a node-1 pod) routes back through trellis.v4.
      nsSysctl(n2.ns, 'net.ipv4.conf.all.rp_filter', '1');
      expect(nsPing(pod.ns, n2.plan.v4, 2)).toBe(false);
      const on2 = findings(doctor(n2).report, 'rp-filter').find((x) => x.startsWith('rp_filter on eth0 '));
      expect(on2).toMatch(/from pods on VXLAN peers \(node-1\).*masquerading is off/);
      expect(on2).toMatch(/fix: echo 2 > \/proc\/sys\/net\/ipv4\/conf\/eth0\/rp_filter /);
      nsExec(n2.ns, 'sh', ['-c', fixCommand(on2!)]);
      expect(nsPing(pod.ns, n2.plan.v4)).toBe(true);

      // node-1: the answer comes in on trellis.v4, node-2's address routes back through eth0.
      nsSysctl(n1.ns, 'net.ipv4.conf.all.rp_filter', '1');
      expect(nsPing(pod.ns, n2.plan.v4, 2)).toBe(false);
      const on1 = findings(doctor(n1).report, 'rp-filter').find((x) =>
        x.startsWith('rp_filter on trellis.v4 '),
      );
      expect(on1).toMatch(/VXLAN peers' own addresses \(node-2 /);
      // The file itself: the image has no sysctl, and the dotted name is a plain path component.
      expect(on1).toMatch(/fix: echo 2 > \/proc\/sys\/net\/ipv4\/conf\/trellis\.v4\/rp_filter /);
      nsExec(n1.ns, 'sh', ['-c', fixCommand(on1!)]);
      expect(nsPing(pod.ns, n2.plan.v4)).toBe(true);
    } finally {
      await tb.teardown();
    }
    expect(tb.leftovers()).toEqual([]);
  }, 120_000);
});
