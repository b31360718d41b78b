import { describe, expect, it } from 'vitest';
import type { LinkInfo } from '../../../pkg/datapath/ports.ts';
import { ADMIN_SOCKET_OFF, ANSWERED_PREFIX, type DoctorFacts, runDoctor } from '../../../pkg/ops/doctor.ts';
import { missingPeers, peerRouteStates } from '../../../pkg/ops/peer-coverage.ts';
import {
  type LeaseRow,
  type LeasesView,
  type RouteRow,
  type RoutesView,
  routesView,
  type StatusView,
} from '../../../pkg/ops/views.ts';
import { desiredRoutes } from '../../../pkg/routes/desired.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';

const lease = (over: Partial<LeaseRow> = {}): LeaseRow => ({
  containerId: 'c'.repeat(64),
  ifname: 'eth0',
  podNamespace: 'default',
  podName: 'web-1',
  netns: '/var/run/netns/cni-1',
  addresses: ['10.244.1.2'],
  hostVeth: 'trl0123456789ab',
  createdAt: '2026-01-01T00:00:00Z',
  ...over,
});

const status: StatusView = {
  node: 'n1',
  version: '0.1.0',
  runtime: 'v24.9.0',
  standalone: false,
  mode: 'auto',
  mtu: 1450,
  podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'],
  ready: true,
  socket: '/run/trellis/cni.sock',
  stateDir: '/var/lib/trellis',
  cniConfDir: '/etc/cni/net.d',
  cniBinDir: '/opt/cni/bin',
  leases: 1,
  ipam: [],
  masquerade: { enabled: true, noMasqueradeCIDRs: [] },
  forwardFirewall: { checkedAt: '2026-12-01T10:00:00.000Z', blocks: [] },
};

const okRoute: RouteRow = {
  family: 4,
  dst: '10.244.2.0/24',
  want: 'via 192.168.1.2 dev eth0 proto 126',
  have: 'via 192.168.1.2 dev eth0 proto 126',
  state: 'ok',
};

/** A healthy node: every check passes. Each case below breaks exactly one fact. */
function healthy(): DoctorFacts {
  return {
    agent: {
      ok: true,
      value: {
        status: { ...status },
        routes: {
          node: 'n1',
          routes: [okRoute],
          drift: 0,
          problems: [],
          peers: [
            {
              node: 'n2',
              family: 4,
              path: 'direct',
              nodeIP: '192.168.1.2',
              ifindex: 2,
              linkName: 'eth0',
              podCIDRs: ['10.244.2.0/24'],
            },
          ],
        },
        leases: { node: 'n1', leases: [lease()] },
      },
    },
    confDir: '/etc/cni/net.d',
    expectedConflist: '10-trellis.conflist',
    confFiles: { ok: true, value: ['10-trellis.conflist', '99-loopback.conf', 'README'] },
    ourConflist: { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1450 } },
    binDir: '/opt/cni/bin',
    binaries: {
      trellis: { present: true, executable: true },
      portmap: { present: true, executable: true },
      loopback: { present: true, executable: true },
    },
    shimVersion: { ok: true, value: 'trellis 0.1.0\n' },
    forwarding: { v4: '1', v6: '1' },
    rpFilter: { all: 0, byIface: { eth0: 2, trl0123456789ab: 0, lo: 0 } },
    links: [
      { name: 'lo', mtu: 65536, kind: undefined },
      { name: 'eth0', mtu: 1500, kind: undefined },
      { name: 'trl0123456789ab', mtu: 1450, kind: 'veth' },
    ],
    defaultRouteIfaces: ['eth0'],
    peerUplinks: {},
    netnsExists: { '/var/run/netns/cni-1': true },
    overhead: 0,
  };
}

type Case = [string, (f: DoctorFacts) => void, string, RegExp, RegExp];

/** A peer the last pass could not route (its InternalIP off every subnet of this node). */
const UNREACHABLE_N9 = {
  node: 'n9',
  family: 4 as const,
  path: 'unreachable' as const,
  nodeIP: '10.9.0.1',
  podCIDRs: ['10.244.9.0/24'],
  reason: 'InternalIP 10.9.0.1 is not on a subnet connected to this node',
};

const agentValue = (f: DoctorFacts) => {
  if (!f.agent.ok) throw new Error('agent fact missing');
  return f.agent.value;
};

/** A peer on another subnet, reached through the VXLAN device; its InternalIP is routed via eth0. */
function addVxlanPeer(f: DoctorFacts): void {
  agentValue(f).routes.peers.push({
    node: 'n3',
    family: 4,
    path: 'vxlan',
    nodeIP: '192.168.20.3',
    vtepIP: '10.244.3.0',
    vtepMac: '02:00:00:00:00:03',
    ifindex: 7,
    linkName: 'trellis.v4',
    podCIDRs: ['10.244.3.0/24'],
  });
  f.links.push({ name: 'trellis.v4', mtu: 1450, kind: 'vxlan' });
  f.rpFilter.byIface['trellis.v4'] = 0;
  f.peerUplinks['192.168.20.3'] = 'eth0';
}

const cases: Case[] = [
  [
    'agent unreachable',
    (f) => {
      f.agent = { ok: false, error: 'connect ENOENT /run/trellis/admin.sock' };
    },
    'agent',
    /cannot reach the agent's admin socket: connect ENOENT/,
    /trellis agent runs on this node/,
  ],
  [
    'agent answering one request and failing another',
    (f) => {
      f.agent = {
        ok: false,
        error: `${ANSWERED_PREFIX} /routes: no answer within 5000 ms`,
      };
    },
    'agent',
    /^the agent answers its admin socket, but \/routes: no answer within 5000 ms$/,
    /it runs, and one of its answers failed/,
  ],
  [
    'agent serving ADD but not ready: its reconcile pass waits',
    (f) => {
      agentValue(f).status.readiness = {
        ok: false,
        checks: {
          agent: 'ok',
          reconcile: 'the last reconcile pass is waiting: Node n1 has no spec.podCIDRs yet',
          nodeWatch: 'ok',
        },
      };
    },
    'agent',
    /not ready: reconcile: the last reconcile pass is waiting: Node n1 has no spec.podCIDRs yet/,
    /reason names/,
  ],
  [
    'agent waiting for the first list of Nodes, the API unreachable',
    (f) => {
      const status = agentValue(f).status;
      status.ready = false;
      status.notReadyReason = 'waiting for the first list of Nodes';
      status.watch = {
        restarts: 3,
        relists: 0,
        resourceVersion: '',
        synced: false,
        lastFailure: {
          at: '2026-11-30T06:30:00.000Z',
          error: 'list nodes: connect ECONNREFUSED 10.96.0.1:443',
        },
      };
    },
    'agent',
    /last list or watch of Nodes failed at 2026-11-30T06:30:00.000Z: list nodes: connect ECONNREFUSED/,
    /reaches the API server/,
  ],
  [
    'agent not ready',
    (f) => {
      agentValue(f).status.ready = false;
      agentValue(f).status.notReadyReason = 'pod CIDRs are not known yet';
    },
    'agent',
    /not ready: pod CIDRs are not known yet/,
    /reason names/,
  ],
  [
    'config missing',
    (f) => {
      f.confFiles = { ok: true, value: ['README'] };
      f.ourConflist = undefined;
    },
    'cni-config',
    /10-trellis\.conflist is missing/,
    /agent writes it once ready/,
  ],
  [
    'another config sorts first',
    (f) => {
      f.confFiles = { ok: true, value: ['10-trellis.conflist', '05-flannel.conflist'] };
    },
    'cni-config',
    /05-flannel\.conflist sorts before 10-trellis\.conflist.*containerd/,
    /remove \/etc\/cni\/net\.d\/05-flannel\.conflist/,
  ],
  [
    'another config sorts first, and one after ours: only the ones before are named',
    (f) => {
      f.confFiles = { ok: true, value: ['99-z.conflist', '10-trellis.conflist', '05-other.conf'] };
    },
    'cni-config',
    /05-other\.conf sorts before 10-trellis\.conflist/,
    /^remove \/etc\/cni\/net\.d\/05-other\.conf \(a previous network plugin's config\)$/,
  ],
  [
    'two configs before ours',
    (f) => {
      f.confFiles = {
        ok: true,
        value: ['10-trellis.conflist', '05-a.conf', '07-b.conflist', '99-z.conflist'],
      };
    },
    'cni-config',
    /05-a\.conf sorts before/,
    /and the others before 10-trellis\.conflist: 07-b\.conflist$/,
  ],
  [
    'conf dir unreadable',
    (f) => {
      f.confFiles = { ok: false, error: 'EACCES' };
    },
    'cni-config',
    /cannot read \/etc\/cni\/net\.d: EACCES/,
    /create it/,
  ],
  [
    'config unparsable',
    (f) => {
      f.ourConflist = { ok: false, error: 'Unexpected token' };
    },
    'cni-config',
    /unreadable: Unexpected token/,
    /delete .* rewrites it/,
  ],
  [
    'another network in our file',
    (f) => {
      f.ourConflist = { ok: true, value: { types: ['bridge', 'portmap'], mtu: undefined } };
    },
    'cni-config',
    /holds no trellis plugin \(its plugin types: \["bridge","portmap"\]\)/,
    /delete .* rewrites it/,
  ],
  [
    'config MTU differs',
    (f) => {
      f.ourConflist = { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1500 } };
    },
    'cni-config',
    /sets MTU 1500, the agent uses 1450/,
    /next reconcile pass/,
  ],
  [
    'portmap missing',
    (f) => {
      f.binaries.portmap = { present: false, executable: false };
    },
    'cni-binaries',
    /\/opt\/cni\/bin\/portmap is missing/,
    /install-cni init container/,
  ],
  [
    'loopback not executable',
    (f) => {
      f.binaries.loopback = { present: true, executable: false };
    },
    'cni-binaries',
    /loopback is not executable/,
    /chmod 0755/,
  ],
  [
    'portmap does not run on the host (the agent found it)',
    (f) => {
      if (f.agent.ok) {
        f.agent.value.status.cniBinaryProblems = [
          {
            binary: '/opt/cni/bin/portmap',
            problem: "exited with status 1: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found",
          },
        ];
      }
    },
    'cni-binaries',
    /\/opt\/cni\/bin\/portmap exited with status 1: .*GLIBC_2\.34.*config list stays unpublished/,
    /a build that runs on this host/,
  ],
  [
    'portmap a symlink that dangles here and, by the agent, on the host too',
    (f) => {
      f.binaries.portmap = { present: true, executable: false, danglingTo: '/usr/libexec/cni/portmap' };
      agentValue(f).status.cniBinaryProblems = [
        {
          binary: '/opt/cni/bin/portmap',
          problem:
            "is a symlink to /usr/libexec/cni/portmap, which the runtime's mount namespace does not have (or cannot start: its interpreter or loader missing there)",
        },
      ];
    },
    'cni-binaries',
    /portmap is a symlink to \/usr\/libexec\/cni\/portmap, which does not exist here nor, by the agent, on the host/,
    /install-cni keeps any entry it finds/,
  ],
  [
    'shim version mismatch',
    (f) => {
      f.shimVersion = { ok: true, value: 'trellis 0.0.9\n' };
    },
    'shim-version',
    /trellis is version 0\.0\.9, the agent is 0\.1\.0/,
    /install-cni replaces/,
  ],
  [
    'shim does not run',
    (f) => {
      f.shimVersion = { ok: false, error: 'exec format error' };
    },
    'shim-version',
    /--version failed: exec format error/,
    /reinstall/,
  ],
  [
    'IPv4 forwarding off',
    (f) => {
      f.forwarding.v4 = '0';
    },
    'forwarding',
    /net\.ipv4\.ip_forward is 0/,
    /^echo 1 > \/proc\/sys\/net\/ipv4\/ip_forward /,
  ],
  [
    'IPv6 forwarding off',
    (f) => {
      f.forwarding.v6 = '0';
    },
    'forwarding',
    /net\.ipv6\.conf\.all\.forwarding is 0/,
    /^echo 1 > \/proc\/sys\/net\/ipv6\/conf\/all\/forwarding /,
  ],
  [
    'strict rp_filter on the uplink, masquerading off, a VXLAN peer',
    (f) => {
      addVxlanPeer(f);
      agentValue(f).status.masquerade = { enabled: false, noMasqueradeCIDRs: [] };
      f.rpFilter.byIface.eth0 = 1;
    },
    'rp-filter',
    /rp_filter on eth0 is strict \(effective max\(all=0, eth0=1\) = 1\): it drops packets from pods on VXLAN peers \(n3\) to this node's own addresses.*masquerading is off/,
    /^echo 2 > \/proc\/sys\/net\/ipv4\/conf\/eth0\/rp_filter /,
  ],
  [
    'strict rp_filter via all, a no-masquerade CIDR covering a VXLAN peer',
    (f) => {
      addVxlanPeer(f);
      agentValue(f).status.masquerade = { enabled: true, noMasqueradeCIDRs: ['192.168.0.0/16'] };
      f.rpFilter.all = 1;
    },
    'rp-filter',
    /rp_filter on trellis\.v4 is strict \(effective max\(all=1, trellis\.v4=0\) = 1\): it drops packets from VXLAN peers' own addresses \(n3 192\.168\.20\.3\).*no-masquerade CIDR 192\.168\.0\.0\/16/,
    /^echo 2 > \/proc\/sys\/net\/ipv4\/conf\/trellis\.v4\/rp_filter /,
  ],
  [
    'pod MTU above the uplink',
    (f) => {
      agentValue(f).status.mtu = 1500;
      f.ourConflist = { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1500 } };
      f.links[1]!.mtu = 1400;
    },
    'mtu',
    /pod MTU 1500 is larger than eth0's MTU 1400/,
    /TRELLIS_MTU .* 1400 or less/,
  ],
  [
    'routes off the node above the uplink less the overlay',
    (f) => {
      // Interfaces at the full 1500 are fine; what leaves the node must leave room for VXLAN.
      agentValue(f).status.mtu = 1500;
      agentValue(f).status.routeMtu = 1480;
      f.ourConflist = { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1500 } };
      f.links[2]!.mtu = 1500;
      f.overhead = 50;
    },
    'mtu',
    /pod MTU 1480 \(off the node\) is larger than eth0's MTU 1500 minus 50 bytes of encapsulation/,
    /TRELLIS_MTU .* 1450 or less/,
  ],
  [
    'pod MTU below what IPv6 needs on a node with an IPv6 pod CIDR',
    (f) => {
      agentValue(f).status.mtuProblem =
        'pod MTU 1000 (configured (--mtu)) is below 1280, the smallest MTU IPv6 runs on, and pod CIDR fd00:10:244:1::/64 is IPv6: set --mtu to 1280 or more';
    },
    'mtu',
    /pod MTU 1000 .* is below 1280.*every pod ADD would fail/,
    /TRELLIS_MTU .* to 1280 or more/,
  ],
  [
    'veth MTU above the pod MTU',
    (f) => {
      f.links[2]!.mtu = 9000;
    },
    'mtu',
    /host veth trl0123456789ab has MTU 9000, above the pod MTU 1450/,
    /recreate that pod/,
  ],
  [
    'route missing',
    (f) => {
      agentValue(f).routes.routes = [{ ...okRoute, have: '', state: 'missing' }];
    },
    'routes',
    /route 10\.244\.2\.0\/24 .* is missing from the kernel/,
    /puts it back/,
  ],
  [
    'route held back while the InternalIP is off its link',
    (f) => {
      agentValue(f).routes.routes = [
        {
          ...okRoute,
          have: '',
          state: 'held',
          reason: "waits for this node's InternalIP 192.168.1.1 back on eth0 (up to 30 s)",
        },
      ];
    },
    'routes',
    /route 10\.244\.2\.0\/24 .* it waits for this node's InternalIP 192\.168\.1\.1 back on eth0/,
    /put the node's address back/,
  ],
  [
    'route differs',
    (f) => {
      agentValue(f).routes.routes = [
        { ...okRoute, have: 'via 192.168.1.9 dev eth0 proto 126', state: 'differs' },
      ];
    },
    'routes',
    /is "via 192\.168\.1\.9 dev eth0 proto 126", trellis wants/,
    /replaces it/,
  ],
  [
    'foreign route in the way',
    (f) => {
      agentValue(f).routes.routes = [
        { ...okRoute, have: 'via 10.0.0.1 dev eth0 proto 4', state: 'conflict' },
      ];
    },
    'routes',
    /held by a route trellis does not own/,
    /\(ip route del 10\.244\.2\.0\/24 proto 4\)/,
  ],
  [
    'a foreign IPv6 route in the way, through a link the agent could not name: deleted by prefix, protocol and metric',
    (f) => {
      agentValue(f).routes.routes = [
        {
          family: 6,
          dst: 'fd00:2::/64',
          want: 'via fe80::2 dev eth0 proto 126',
          have: 'via fe80::9 dev #12 proto 186',
          haveMetric: 512,
          state: 'conflict',
        },
      ];
    },
    'routes',
    /held by a route trellis does not own \(via fe80::9 dev #12 proto 186\)/,
    /\(ip -6 route del fd00:2::\/64 proto 186 metric 512\)/,
  ],
  [
    'a foreign blackhole in the way',
    (f) => {
      agentValue(f).routes.routes = [{ ...okRoute, have: 'blackhole proto 4', state: 'conflict' }];
    },
    'routes',
    /held by a route trellis does not own \(blackhole proto 4\)/,
    /\(ip route del blackhole 10\.244\.2\.0\/24 proto 4\)/,
  ],
  [
    'a route trellis cannot read in the way',
    (f) => {
      agentValue(f).routes.routes = [
        { ...okRoute, have: 'unreadable route', state: 'conflict', unreadable: true },
      ];
    },
    'routes',
    /held by a multipath, unreachable, prohibit or throw route, which trellis cannot read/,
    /ip route show 10\.244\.2\.0\/24/,
  ],
  [
    'stale route',
    (f) => {
      agentValue(f).routes.routes.push({
        family: 6,
        dst: 'fd00:9::/64',
        want: '',
        have: 'via fe80::1 dev eth0 proto 126',
        state: 'stale',
      });
    },
    'routes',
    /stale trellis route fd00:9::\/64/,
    /ip -6 route del fd00:9::\/64 proto 126/,
  ],
  [
    'peer unreachable',
    (f) => {
      agentValue(f).routes.peers = [UNREACHABLE_N9];
    },
    'routes',
    /peer n9 \(IPv4\) is unreachable in auto mode: InternalIP/,
    /has no trellis agent with an IPv4 overlay running/,
  ],
  [
    'peer unreachable with host-gw',
    (f) => {
      agentValue(f).status.mode = 'host-gw';
      agentValue(f).routes.peers = [UNREACHABLE_N9];
    },
    'routes',
    /peer n9 \(IPv4\) is unreachable with host-gw/,
    /TRELLIS_MODE=auto/,
  ],
  [
    'leaked lease',
    (f) => {
      f.netnsExists['/var/run/netns/cni-1'] = false;
    },
    'leases',
    /lease 10\.244\.1\.2 of default\/web-1 is leaked: its network namespace \/var\/run\/netns\/cni-1 is gone/,
    /^ip link del trl0123456789ab \(its veth still exists\), then restart the trellis pod/,
  ],
  [
    'leaked lease whose veth is gone too',
    (f) => {
      f.netnsExists['/var/run/netns/cni-1'] = false;
      f.links = f.links.filter((l) => l.name !== 'trl0123456789ab');
    },
    'leases',
    /lease 10\.244\.1\.2 of default\/web-1 is leaked/,
    /^restart the trellis pod \(its start-up sweep releases leases whose namespace and veth are gone\); in Kubernetes mode the periodic IPAM GC/,
  ],
  [
    'orphan veth',
    (f) => {
      f.links.push({ name: 'trlffffffffffff', mtu: 1450, kind: 'veth' });
    },
    'veths',
    /host veth trlffffffffffff has no lease/,
    /ip link del trlffffffffffff/,
  ],
];

describe('doctor', () => {
  it('a healthy node passes every check', () => {
    const r = runDoctor(healthy());
    expect(r.checks.filter((c) => c.findings.length > 0)).toEqual([]);
    expect(r.checks.filter((c) => c.skipped !== undefined)).toEqual([]);
    expect(r.ok).toBe(true);
  });

  it('plugins other tools chained into the list, before or after trellis, are no finding', () => {
    const f = healthy();
    f.ourConflist = { ok: true, value: { types: ['tuning', 'trellis', 'portmap', 'istio-cni'], mtu: 1450 } };
    expect(runDoctor(f).ok).toBe(true);
  });

  it.each(cases)('%s -> a %s finding with its fix', (_name, breakIt, check, problem, fix) => {
    const f = healthy();
    breakIt(f);
    const r = runDoctor(f);
    expect(r.ok).toBe(false);
    const failing = r.checks.filter((c) => c.findings.length > 0);
    expect(failing.map((c) => c.name)).toEqual([check]);
    const findings = failing[0]!.findings;
    expect(
      findings.some((x) => problem.test(x.problem) && fix.test(x.fix)),
      JSON.stringify(findings, null, 2),
    ).toBe(true);
  });

  it("the admin socket turned off: the agent's checks are skipped, saying why, and a healthy node passes", () => {
    const f = healthy();
    f.agent = { ok: false, error: ADMIN_SOCKET_OFF };
    const r = runDoctor(f);
    expect(r.checks.find((c) => c.name === 'agent')?.skipped).toBe(ADMIN_SOCKET_OFF);
    expect(r.checks.filter((c) => c.findings.length > 0)).toEqual([]);
    for (const c of r.checks.filter((x) => x.skipped !== undefined && x.name !== 'agent'))
      expect(c.skipped).toContain(ADMIN_SOCKET_OFF);
    expect(r.ok).toBe(true);
  });

  it('an agent that publishes no config list (--no-cni-config): its absence is no finding, the check says why it is skipped', () => {
    const f = healthy();
    f.confFiles = { ok: true, value: [] };
    f.ourConflist = undefined;
    expect(runDoctor(f).ok).toBe(false); // the agent publishes it: its absence is a finding
    agentValue(f).status.cniConfigPublished = false;
    const r = runDoctor(f);
    expect(r.checks.find((c) => c.name === 'cni-config')?.skipped).toBe(
      'the agent publishes no config list (--no-cni-config)',
    );
    expect(r.ok).toBe(true);
  });

  it('a plugin symlinked into a host path the agent does not mount is fine when the agent ran it on the host', () => {
    const f = healthy();
    f.binaries.portmap = { present: true, executable: false, danglingTo: '/usr/libexec/cni/portmap' };
    expect(runDoctor(f).ok).toBe(true);
    // Dangling there too: one finding, not the agent's second copy of it.
    agentValue(f).status.cniBinaryProblems = [
      { binary: '/opt/cni/bin/portmap', problem: 'is a symlink to …' },
    ];
    expect(runDoctor(f).checks.find((c) => c.name === 'cni-binaries')?.findings).toHaveLength(1);
  });

  it('an old API failure is not blamed for a reconcile pass that waits on something else', () => {
    const f = healthy();
    const status = agentValue(f).status;
    status.readiness = {
      ok: false,
      checks: {
        agent: 'ok',
        reconcile: 'the last reconcile pass is waiting: Node n1 has no spec.podCIDRs yet',
        nodeWatch: 'ok',
      },
    };
    status.watch = {
      restarts: 1,
      relists: 2,
      resourceVersion: '42',
      synced: true,
      lastFailure: {
        at: '2026-11-27T06:30:00.000Z',
        error: 'list nodes: connect ECONNREFUSED 10.96.0.1:443',
      },
    };
    const agent = runDoctor(f).checks.find((c) => c.name === 'agent')!;
    expect(agent.findings.map((x) => x.problem)).toEqual([
      'the agent is not ready: reconcile: the last reconcile pass is waiting: Node n1 has no spec.podCIDRs yet',
    ]);
    // The same failure while the watch keeps failing is reported.
    status.readiness.checks.nodeWatch = 'the Node watch has been restarting for 6 minutes';
    expect(
      runDoctor(f)
        .checks.find((c) => c.name === 'agent')!
        .findings.map((x) => x.problem),
    ).toContain(
      'the last list or watch of Nodes failed at 2026-11-27T06:30:00.000Z: list nodes: connect ECONNREFUSED 10.96.0.1:443',
    );
  });

  it('strict rp_filter everywhere passes every path trellis builds with masquerading on: no finding', () => {
    const f = healthy();
    addVxlanPeer(f);
    f.rpFilter = { all: 1, byIface: { eth0: 1, trl0123456789ab: 1, 'trellis.v4': 1, lo: 1 } };
    expect(runDoctor(f).checks.find((c) => c.name === 'rp-filter')?.findings).toEqual([]);
    expect(runDoctor(f).ok).toBe(true);
    // Without VXLAN peers even pod traffic that keeps its address takes the same way both directions.
    agentValue(f).routes.peers.pop();
    agentValue(f).status.masquerade = { enabled: false, noMasqueradeCIDRs: [] };
    expect(runDoctor(f).ok).toBe(true);
  });

  it('strict rp_filter toward a VXLAN peer whose address keeps pod sources: both the uplink and the device', () => {
    const f = healthy();
    addVxlanPeer(f);
    agentValue(f).status.masquerade = { enabled: false, noMasqueradeCIDRs: [] };
    f.rpFilter.all = 1;
    f.rpFilter.byIface.eth0 = 0;
    const found = runDoctor(f).checks.find((c) => c.name === 'rp-filter')!.findings;
    expect(found.map((x) => x.fix.split(' (')[0])).toEqual([
      'echo 2 > /proc/sys/net/ipv4/conf/eth0/rp_filter',
      'echo 2 > /proc/sys/net/ipv4/conf/trellis.v4/rp_filter',
    ]);
    // An agent that does not report its masquerade settings (older version): nothing to judge by.
    delete agentValue(f).status.masquerade;
    expect(runDoctor(f).checks.find((c) => c.name === 'rp-filter')?.skipped).toMatch(/masquerade/);
  });

  it("a no-masquerade CIDR decides each direction by the address it covers: the uplink by this node's InternalIP, the device by the peer's", () => {
    const strictOn = (ownIP: string, noMasq: string): string[] => {
      const f = healthy();
      addVxlanPeer(f);
      agentValue(f).status.internalIPs = [ownIP];
      agentValue(f).status.masquerade = { enabled: true, noMasqueradeCIDRs: [noMasq] };
      f.rpFilter.all = 1;
      f.rpFilter.byIface.eth0 = 0;
      return runDoctor(f)
        .checks.find((c) => c.name === 'rp-filter')!
        .findings.map((x) => x.problem.split(' is strict')[0]!);
    };
    // Covers the peer (192.168.20.3) only: this node's pods keep their address toward it (the device);
    // the peer's pods masquerade toward this node, so the uplink is fine.
    expect(strictOn('10.0.0.5', '192.168.20.0/24')).toEqual(['rp_filter on trellis.v4']);
    // Covers this node only: the peer's pods keep theirs toward this node's address (the uplink).
    expect(strictOn('192.168.20.5', '192.168.20.5/32')).toEqual(['rp_filter on eth0']);
    const f = healthy();
    addVxlanPeer(f);
    agentValue(f).status.internalIPs = ['192.168.20.5'];
    agentValue(f).status.masquerade = { enabled: true, noMasqueradeCIDRs: ['192.168.20.5/32'] };
    f.rpFilter.all = 1;
    f.rpFilter.byIface.eth0 = 0;
    expect(runDoctor(f).checks.find((c) => c.name === 'rp-filter')!.findings[0]!.problem).toContain(
      "no-masquerade CIDR 192.168.20.5/32 covers this node's InternalIP 192.168.20.5",
    );
    // The agent's Node cache without its own Node (gone from the API): judged as before, by the peer's.
    agentValue(f).status.internalIPs = [];
    agentValue(f).status.masquerade = { enabled: false, noMasqueradeCIDRs: [] };
    expect(
      runDoctor(f)
        .checks.find((c) => c.name === 'rp-filter')!
        .findings.map((x) => x.problem.split(' is strict')[0]),
    ).toEqual(['rp_filter on eth0', 'rp_filter on trellis.v4']);
  });

  it("a held attachment's veth (its lease record quarantined, its pod maybe running) is not an orphan", () => {
    const f = healthy();
    f.links.push({ name: 'trlffffffffffff', mtu: 1450, kind: 'veth' });
    agentValue(f).leases.held = [{ containerId: 'ffff', ifname: 'eth0', hostVeth: 'trlffffffffffff' }];
    expect(runDoctor(f).checks.find((c) => c.name === 'veths')!.findings).toEqual([]);
  });

  it('a pod started or deleted between the lease list and the link list is neither an orphan veth nor a leak', () => {
    const f = healthy();
    // Started: its lease came after the first list, its veth before the links were listed.
    f.links.push({ name: 'trlffffffffffff', mtu: 1450, kind: 'veth' });
    const started = lease({ containerId: 'f'.repeat(64), hostVeth: 'trlffffffffffff', netns: '' });
    // Deleted: its namespace gone, its lease released before the second list.
    f.netnsExists['/var/run/netns/cni-1'] = false;
    f.leasesAfterLinks = { node: 'n1', leases: [started] };
    const checks = runDoctor(f).checks;
    expect(checks.find((c) => c.name === 'veths')!.findings).toEqual([]);
    expect(checks.find((c) => c.name === 'leases')!.findings).toEqual([]);
    // Still there on the second list: both are findings, as before.
    f.leasesAfterLinks = { node: 'n1', leases: [lease()] };
    const again = runDoctor(f).checks;
    expect(again.find((c) => c.name === 'veths')!.findings.map((x) => x.problem)).toEqual([
      'host veth trlffffffffffff has no lease: left over from an interrupted ADD or DEL',
    ]);
    expect(again.find((c) => c.name === 'leases')!.findings).toHaveLength(1);
  });

  it('a veth a DEL or GC is deleting (its lease released first) is no orphan, in either lease list', () => {
    // DEL released the lease and handed the pair to the background deleter before the first list;
    // the links were listed while the kernel was still deleting it.
    for (const inFirst of [true, false]) {
      const f = healthy();
      f.links.push({ name: 'trlffffffffffff', mtu: 1450, kind: 'veth' });
      const after: LeasesView = { node: 'n1', leases: [lease()] };
      if (inFirst) agentValue(f).leases.vethsInFlight = ['trlffffffffffff'];
      else after.vethsInFlight = ['trlffffffffffff'];
      f.leasesAfterLinks = after;
      expect(runDoctor(f).checks.find((c) => c.name === 'veths')!.findings).toEqual([]);
    }
    // Named by neither: an orphan, as before.
    const f = healthy();
    f.links.push({ name: 'trlffffffffffff', mtu: 1450, kind: 'veth' });
    agentValue(f).leases.vethsInFlight = ['trleeeeeeeeeeee'];
    expect(runDoctor(f).checks.find((c) => c.name === 'veths')!.findings).toHaveLength(1);
  });

  it('the nftables table the agent could not write is a finding, masquerading on or off', () => {
    const f = healthy();
    agentValue(f).status.masquerade = {
      enabled: true,
      noMasqueradeCIDRs: [],
      lastError: 'nft -f -: exit code 1: Error: x',
    };
    const check = () => runDoctor(f).checks.find((c) => c.name === 'masquerade')!;
    expect(check().findings.map((x) => x.problem)).toEqual([
      'the agent could not write its nftables table: nft -f -: exit code 1: Error: x; pods leave the cluster with their own addresses, and nothing checks their source addresses',
    ]);
    // With masquerading off the table still holds the source check (and the clamp): still a finding.
    agentValue(f).status.masquerade = { enabled: false, noMasqueradeCIDRs: [], lastError: 'boom' };
    expect(check().findings.map((x) => x.problem)).toEqual([
      'the agent could not write its nftables table: boom; nothing checks the source addresses of pods, nor clamps TCP into the tunnels',
    ]);
    agentValue(f).status.masquerade = { enabled: false, noMasqueradeCIDRs: [] };
    expect(check().findings).toEqual([]);
  });

  it("a forward chain of the host's firewall that drops pod traffic is a finding, with the accept rule to add", () => {
    const f = healthy();
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [
        {
          family: 4,
          podCIDR: '10.244.1.0/24',
          direction: 'to-pods',
          chain: 'ip filter FORWARD',
          by: 'policy drop',
        },
      ],
    };
    const r = runDoctor(f);
    expect(r.ok).toBe(false);
    const check = r.checks.find((c) => c.name === 'firewall')!;
    expect(check.findings).toHaveLength(1);
    expect(check.findings[0]!.problem).toBe(
      'ip filter FORWARD drops IPv4 packets to pods (10.244.1.0/24): policy drop; IPv4 pod traffic cannot reach pods on this node',
    );
    expect(check.findings[0]!.fix).toMatch(
      /^iptables -I FORWARD -d 10\.244\.1\.0\/24 -j ACCEPT \(on a Docker host .*DOCKER-USER/,
    );
    // A table another process owns (firewalld 2.2+): its owner's fix, without the Docker note.
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [
        {
          family: 4,
          podCIDR: '10.244.1.0/24',
          direction: 'to-pods',
          chain: 'inet firewalld filter_FORWARD',
          by: 'reject with icmpx admin-prohibited',
          owned: true,
        },
      ],
    };
    const owned = runDoctor(f).checks.find((c) => c.name === 'firewall')!.findings[0]!.fix;
    expect(owned).toMatch(/firewall-cmd/);
    expect(owned).not.toMatch(/DOCKER-USER/);
    // Read once, unreadable since: a finding, not the old check's pass.
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [],
      error: 'iptables-legacy-save: exit status 1',
    };
    const stale = runDoctor(f).checks.find((c) => c.name === 'firewall')!;
    expect(stale.findings.map((x) => x.problem)).toEqual([
      "the agent cannot read the host firewall's forward chains now (iptables-legacy-save: exit status 1); what it found is from its check at 2026-12-01T10:00:00.000Z",
    ]);
    // Not read yet, unreadable, or an agent that does not look: skipped with the reason, never a pass.
    agentValue(f).status.forwardFirewall = { blocks: [], error: 'nft: not found' };
    expect(runDoctor(f).checks.find((c) => c.name === 'firewall')!.skipped).toBe(
      'the agent could not read it: nft: not found',
    );
    agentValue(f).status.forwardFirewall = { blocks: [], off: true };
    expect(runDoctor(f).checks.find((c) => c.name === 'firewall')!.skipped).toBe(
      'the agent does not check it (--firewall-check-seconds 0)',
    );
    delete agentValue(f).status.forwardFirewall;
    expect(runDoctor(f).checks.find((c) => c.name === 'firewall')!.skipped).toMatch(/older version/);
    // Chains the agent could not judge (an NFQUEUE verdict, say): never called a pass.
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [],
      undecided: ['ip filter FORWARD'],
    };
    const unjudged = runDoctor(f).checks.find((c) => c.name === 'firewall')!;
    expect(unjudged.findings).toEqual([]);
    expect(unjudged.skipped).toBe(
      'the agent cannot judge ip filter FORWARD (rules it cannot read: a queue to another program, an unknown target); no drop found elsewhere',
    );
    // A legacy table the agent could not read: a finding naming the tool, whatever else it found.
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [],
      unreadTables: [{ family: 'ip6tables-legacy', error: 'spawn ip6tables-legacy-save ENOENT' }],
    };
    const unread = runDoctor(f).checks.find((c) => c.name === 'firewall')!;
    expect(unread.skipped).toBeUndefined();
    expect(unread.findings).toEqual([
      {
        problem:
          "the agent cannot read the host firewall's legacy table ip6tables-legacy filter: spawn ip6tables-legacy-save ENOENT; what it drops is as the agent last read it, and trellis accepts nothing there meanwhile",
        fix: expect.stringMatching(
          /^make ip6tables-legacy-save run in the agent's container .* ip6tables-legacy-save -t filter$/,
        ),
      },
    ]);
    // Neither family's table list readable: one finding, about the list.
    const listing = "listing the legacy tables: EACCES: permission denied, open '/proc/net/ip_tables_names'";
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [],
      unreadTables: [
        { family: 'iptables-legacy', error: listing },
        { family: 'ip6tables-legacy', error: listing },
      ],
    };
    expect(runDoctor(f).checks.find((c) => c.name === 'firewall')!.findings).toEqual([
      {
        problem:
          "the agent cannot tell which legacy iptables tables the host has (EACCES: permission denied, open '/proc/net/ip_tables_names'); what they drop is as the agent last read them, and trellis accepts nothing there meanwhile",
        fix: expect.stringContaining('/proc/net/ip_tables_names'),
      },
    ]);
  });

  it("an input chain that drops the tunnelled nodes' VXLAN is a finding, with the port to open (never opened by trellis)", () => {
    const f = healthy();
    agentValue(f).status.forwardFirewall = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [],
      vxlanBlocks: [{ family: 4, port: 8472, chain: 'ip filter INPUT', by: 'policy drop' }],
    };
    const check = runDoctor(f).checks.find((c) => c.name === 'firewall')!;
    expect(check.findings.map((x) => x.problem)).toEqual([
      'ip filter INPUT drops IPv4 VXLAN (UDP 8472) from the nodes this node tunnels to: policy drop; pods here and on those nodes cannot reach each other',
    ]);
    expect(check.findings[0]!.fix).toMatch(
      /^iptables -I INPUT -p udp --dport 8472 -j ACCEPT \(better, only from the nodes' own addresses .*ufw allow proto udp from <node subnet> to any port 8472.*--add-port=8472\/udp/,
    );
  });

  it('skips the routes check while the agent has no list of Nodes: no route of ours is called stale', () => {
    const f = healthy();
    agentValue(f).routes.synced = false;
    agentValue(f).routes.routes = [];
    const check = runDoctor(f).checks.find((c) => c.name === 'routes')!;
    expect(check.findings).toEqual([]);
    expect(check.skipped).toMatch(/no list of Nodes with this node yet/);
  });

  it('full-MTU pod interfaces whose routes off the node leave room for the overlay are healthy', () => {
    const f = healthy();
    agentValue(f).status.mtu = 1500;
    agentValue(f).status.routeMtu = 1450;
    f.ourConflist = { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1500 } };
    f.links[2]!.mtu = 1500;
    f.overhead = 50;
    expect(runDoctor(f).checks.find((c) => c.name === 'mtu')?.findings).toEqual([]);
  });

  it('auto mode: full-MTU pods and a VXLAN peer are healthy while the node clamps TCP into the tunnel', () => {
    const f = healthy();
    addVxlanPeer(f);
    agentValue(f).status.mtu = 1500;
    f.ourConflist = { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1500 } };
    f.links[2]!.mtu = 1500;
    const mtu = (): string[] =>
      runDoctor(f)
        .checks.find((c) => c.name === 'mtu')!
        .findings.map((x) => x.problem);
    // Without the clamp (an agent that does not report one): 1500 does not fit trellis.v4's 1450.
    expect(mtu()).toEqual([expect.stringMatching(/^pod MTU 1500 is larger than trellis\.v4's MTU 1450/)]);
    agentValue(f).status.mssClamp = ['trellis.v4', 'trellis.v6'];
    expect(mtu()).toEqual([]);
    // The kernel refused the clamp: the agent reports none, and why; doctor says what to load.
    delete agentValue(f).status.mssClamp;
    agentValue(f).status.mssClampRefused = 'Error: Could not process rule: No such file or directory';
    const found = runDoctor(f).checks.find((c) => c.name === 'mtu')!.findings;
    expect(found.map((x) => x.problem)).toEqual([
      expect.stringMatching(
        /trellis\.v4's MTU 1450.*the kernel refused the TCP MSS clamp into it \(Error: Could not/,
      ),
    ]);
    expect(found[0]!.fix).toMatch(
      /^load the modules the clamp needs on the host \(modprobe nft_exthdr nft_rt, as root on the node: the trellis image has no modprobe;/,
    );
  });

  it('a VXLAN device as large as its uplink (--mtu at the underlay MTU): its packets no longer fit once wrapped', () => {
    const f = healthy();
    addVxlanPeer(f);
    agentValue(f).status.mtu = 1500;
    agentValue(f).status.mssClamp = ['trellis.v4'];
    f.ourConflist = { ok: true, value: { types: ['trellis', 'portmap'], mtu: 1500 } };
    f.links[2]!.mtu = 1500;
    const found = () => runDoctor(f).checks.find((c) => c.name === 'mtu')!.findings;
    expect(found()).toEqual([]); // 1450 + 50 fits eth0's 1500
    f.links.find((l) => l.name === 'trellis.v4')!.mtu = 1500;
    expect(found().map((x) => x.problem)).toEqual([
      "VXLAN device trellis.v4 has MTU 1500: with 50 bytes of encapsulation its packets to n3 (192.168.20.3) are 1550 bytes, larger than eth0's MTU 1500, so full-size packets through the tunnel are fragmented or dropped",
    ]);
    expect(found()[0]!.fix).toMatch(
      /^set TRELLIS_MTU .* to 0 to detect it \(the devices then get 1450\), or to 1450 or less/,
    );
    // Where the peer's underlay goes is unknown (its lookup failed): nothing to judge by.
    delete f.peerUplinks['192.168.20.3'];
    expect(found()).toEqual([]);
  });

  it('skips what needs the agent when it is unreachable, and still checks the host', () => {
    const f = healthy();
    f.agent = { ok: false, error: 'ECONNREFUSED' };
    f.forwarding.v4 = '0';
    const r = runDoctor(f);
    const by = Object.fromEntries(r.checks.map((c) => [c.name, c]));
    expect(by.agent!.findings).toHaveLength(1);
    // Which families need forwarding is the pod CIDRs' to say: the last run's node.json, or unknown.
    expect(by.forwarding!.findings).toEqual([]);
    expect(by.forwarding!.skipped).toMatch(/pod CIDRs are unknown/);
    f.rememberedPodCIDRs = ['10.244.1.0/24'];
    f.forwarding.v6 = '0';
    const remembered = runDoctor(f).checks.find((c) => c.name === 'forwarding')!;
    expect(remembered.title).toBe('IP forwarding on (IPv4)');
    expect(remembered.findings.map((x) => x.problem)).toEqual([
      'net.ipv4.ip_forward is 0: the node does not route pod traffic',
    ]);
    for (const n of ['shim-version', 'mtu', 'routes', 'leases', 'veths'])
      expect(by[n]!.skipped, n).toMatch(/not reachable/);
  });

  it('a lease rebuilt without its namespace is no leak while its veth exists; never advises deleting the veth', () => {
    const f = healthy();
    // lease-rebuild restores a quarantined lease without netns when it cannot find the namespace.
    agentValue(f).leases.leases = [lease({ netns: '' })];
    f.netnsExists = {};
    expect(runDoctor(f).ok).toBe(true);

    f.links = f.links.filter((l) => l.name !== 'trl0123456789ab');
    const r = runDoctor(f);
    const findings = r.checks.find((c) => c.name === 'leases')!.findings;
    expect(findings).toHaveLength(1);
    expect(findings[0]!.problem).toMatch(
      /lease 10\.244\.1\.2 of default\/web-1 is leaked: its network namespace is unknown \(lease rebuilt after a crash\) and its host veth trl0123456789ab is gone/,
    );
    expect(findings[0]!.fix).not.toMatch(/ip link del/);
  });

  it("judges each lease by the agent's verdict on it: two leases at one reused /proc/PID path, one of them leaked", () => {
    const f = healthy();
    // The old sandbox's path names a process of the new sandbox now (the PID reused): alive by the
    // path, gone by the namespace ADD recorded. The newer lease at the same path is the running pod's.
    agentValue(f).leases.leases = [
      lease({ containerId: 'old0000000000', netns: '/proc/708/ns/net', netnsAlive: false }),
      lease({
        containerId: 'new0000000000',
        netns: '/proc/708/ns/net',
        netnsAlive: true,
        addresses: ['10.244.1.3'],
      }),
    ];
    f.netnsExists = { '/proc/708/ns/net': true };
    const findings = runDoctor(f).checks.find((c) => c.name === 'leases')!.findings;
    expect(findings.map((x) => x.problem)).toEqual([
      'lease 10.244.1.2 of default/web-1 is leaked: its network namespace /proc/708/ns/net is gone (or that path names another namespace now), but the runtime never sent DEL',
    ]);
  });

  it("a lease whose namespace the agent could not judge (out of descriptors) is no leak, whatever this process sees at the path; the agent's trouble is said once", () => {
    const f = healthy();
    agentValue(f).leases.leases = [
      lease({ netns: '/proc/708/ns/net', netnsUnknown: true }),
      lease({
        containerId: 'other00000000',
        podName: 'web-2',
        netns: '/proc/709/ns/net',
        netnsUnknown: true,
      }),
    ];
    // The CLI's container sees no such PID: "gone" by its own look.
    f.netnsExists = { '/proc/708/ns/net': false, '/proc/709/ns/net': false };
    const findings = runDoctor(f).checks.find((c) => c.name === 'leases')!.findings;
    expect(findings.map((x) => x.problem)).toEqual([
      'the agent could not tell whether the network namespaces of 2 pods (default/web-1, default/web-2) are there: it is out of file descriptors or memory (its log names the errno), and frees no such lease meanwhile',
    ]);
    expect(findings[0]!.fix).not.toMatch(/ip link del/);
  });

  it('IPv6 forwarding unreadable (IPv6 disabled) is fine on an IPv4-only node', () => {
    const f = healthy();
    f.forwarding.v6 = undefined;
    agentValue(f).status.podCIDRs = ['10.244.1.0/24'];
    expect(runDoctor(f).ok).toBe(true);
    agentValue(f).status.podCIDRs = ['10.244.1.0/24', 'fd00:1::/64'];
    expect(runDoctor(f).ok).toBe(false);
  });

  it('an agent still waiting for its pod CIDRs (forwarding not on yet, by design) is no forwarding finding', () => {
    const f = healthy();
    agentValue(f).status.podCIDRs = [];
    f.forwarding = { v4: '0', v6: '0' };
    const check = runDoctor(f).checks.find((c) => c.name === 'forwarding')!;
    expect(check.findings).toEqual([]);
    expect(check.skipped).toMatch(/does not know the node's pod CIDRs yet/);
  });

  it("a single-stack node needs forwarding for its pod CIDRs' family only", () => {
    const forwarding = (f: DoctorFacts) => runDoctor(f).checks.find((c) => c.name === 'forwarding')!;
    const v4only = healthy();
    agentValue(v4only).status.podCIDRs = ['10.244.1.0/24'];
    v4only.forwarding.v6 = '0';
    expect(forwarding(v4only)).toMatchObject({ title: 'IP forwarding on (IPv4)', findings: [] });
    v4only.forwarding.v4 = '0';
    expect(forwarding(v4only).findings.map((x) => x.problem)).toEqual([
      'net.ipv4.ip_forward is 0: the node does not route pod traffic',
    ]);

    const v6only = healthy();
    agentValue(v6only).status.podCIDRs = ['fd00:1::/64'];
    v6only.forwarding.v4 = '0';
    expect(forwarding(v6only)).toMatchObject({ title: 'IP forwarding on (IPv6)', findings: [] });
    v6only.forwarding.v6 = '0';
    expect(forwarding(v6only).findings.map((x) => x.problem)).toEqual([
      'net.ipv6.conf.all.forwarding is 0: IPv6 pod traffic is not routed',
    ]);
  });
});

/**
 * The routes view an agent serves for these Nodes, planned by the real planner, every desired route
 * programmed: only what the planner skipped (its problems) is wrong.
 */
function plannedRoutes(self: PeerNode, peers: PeerNode[]): RoutesView {
  const links = [
    {
      ifindex: 2,
      name: 'eth0',
      addresses: [
        { family: 4 as const, address: '192.168.1.1', prefixLen: 24 },
        { family: 6 as const, address: 'fd00:192::1', prefixLen: 64 },
      ],
    },
  ];
  const plan = desiredRoutes(self, peers, links, { mode: 'host-gw' });
  return routesView(self.name, {
    synced: true,
    desired: plan.routes,
    programmed: plan.routes,
    problems: plan.problems,
    decisions: plan.decisions,
    links: [{ index: 2, name: 'eth0', mtu: 1500, flags: 0 } as unknown as LinkInfo],
  });
}

describe('doctor: what the route planner skipped', () => {
  const self: PeerNode = {
    name: 'n1',
    podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'],
    internalIPs: ['192.168.1.1', 'fd00:192::1'],
  };
  const withRoutes = (routes: RoutesView): DoctorFacts => {
    const f = healthy();
    agentValue(f).routes = routes;
    return f;
  };
  const routeFindings = (f: DoctorFacts) => runDoctor(f).checks.find((c) => c.name === 'routes')!.findings;

  it('a dual-stack peer that reports only an IPv4 InternalIP is a finding, as its metric and coverage say', () => {
    const routes = plannedRoutes(self, [
      { name: 'n2', podCIDRs: ['10.244.2.0/24', 'fd00:2::/64'], internalIPs: ['192.168.1.2'] },
      { name: 'n3', podCIDRs: ['10.244.3.0/24', 'fd00:3::/64'], internalIPs: ['192.168.1.3', 'fd00:192::3'] },
    ]);
    expect(routes.drift).toBe(0); // every route it wants is there: only the problems say n2 is not covered
    const f = withRoutes(routes);
    const found = routeFindings(f);
    expect(found.map((x) => x.problem)).toEqual([
      'peer n2 (IPv6) is not routed from here: no IPv6 InternalIP for pod CIDR fd00:2::/64; skipped',
    ]);
    expect(found[0]!.fix).toMatch(/^give node n2 an IPv6 InternalIP: .*--node-ip=<IPv4>,<IPv6>/);
    expect(runDoctor(f).ok).toBe(false);
    // The same peers as trellis_peer_route_broken and the coverage annotation name.
    const states = peerRouteStates({ ...routes, decisions: routes.peers, errors: [], conflicts: [] }, 'n1');
    expect(missingPeers(states)).toEqual(['n2/v6']);
  });

  it('overlapping pod CIDRs, a node without a pod CIDR, and own CIDRs without a blackhole are findings', () => {
    const found = routeFindings(
      withRoutes(
        plannedRoutes({ ...self, podCIDRs: [...self.podCIDRs, '192.168.1.0/24'] }, [
          { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: ['192.168.1.2'] },
          { name: 'n3', podCIDRs: ['10.244.2.0/24'], internalIPs: ['192.168.1.3'] },
          { name: 'n4', podCIDRs: [], internalIPs: ['192.168.1.4'] },
          // Routed in part: its IPv4 CIDR is routed, its IPv6 one overlaps this node's.
          {
            name: 'n5',
            podCIDRs: ['10.244.5.0/24', 'fd00:1::/80'],
            internalIPs: ['192.168.1.5', 'fd00:192::5'],
          },
        ]),
      ),
    );
    const problems = found.map((x) => x.problem);
    expect(problems).toEqual([
      "peer n2 is not routed from here: pod CIDR 10.244.2.0/24 is also node n3's; skipped on both",
      "peer n3 is not routed from here: pod CIDR 10.244.2.0/24 is also node n2's; skipped on both",
      'peer n4 is not routed from here: no valid pod CIDR; skipped',
      expect.stringMatching(
        /^peer n5's pod CIDR fd00:1::\/80 is not routed from here: .*overlaps this node's/,
      ),
      expect.stringMatching(
        /^this node: this node's pod CIDR 192\.168\.1\.0\/24 contains .*no blackhole route/,
      ),
    ]);
    expect(found[0]!.fix).toMatch(/correct spec\.podCIDRs/);
    expect(found[2]!.fix).toMatch(/--allocate-node-cidrs=true/);
    expect(found[4]!.fix).toMatch(/outside the node network/);
  });

  it('a link routes to peers leave by that is down, or without carrier, is the first finding, naming the peers', () => {
    const routes = plannedRoutes(
      self,
      Array.from({ length: 7 }, (_, i) => ({
        name: `n${i + 2}`,
        podCIDRs: [`10.244.${i + 2}.0/24`],
        internalIPs: [`192.168.1.${i + 2}`],
      })),
    );
    const f = withRoutes(routes);
    f.links = [{ name: 'eth0', mtu: 1500, kind: undefined, up: true, lowerUp: true }];
    expect(routeFindings(f)).toEqual([]);
    f.links = [{ name: 'eth0', mtu: 1500, kind: undefined, up: true, lowerUp: false }];
    const noCarrier = routeFindings(f);
    expect(noCarrier.map((x) => x.problem)).toEqual([
      'eth0, the way to peers n2, n3, n4, n5, n6 and 2 more, has no carrier (cable, switch port, bond member or virtual NIC): pod traffic to them cannot leave this node',
    ]);
    expect(noCarrier[0]!.fix).toMatch(/^check eth0's link \(ip -s link show eth0, ethtool eth0/);
    f.links = [{ name: 'eth0', mtu: 1500, kind: undefined, up: false, lowerUp: false }];
    expect(routeFindings(f)[0]).toMatchObject({
      problem: expect.stringMatching(/^eth0, the way to peers .* is down \(set down\)/),
      fix: expect.stringMatching(/^ip link set eth0 up/),
    });
    // Not known (an older gather): no finding.
    f.links = [{ name: 'eth0', mtu: 1500, kind: undefined }];
    expect(routeFindings(f)).toEqual([]);
  });

  it("this node's InternalIP gone from its interfaces: the fix puts the address back, not the Node object", () => {
    const routes = plannedRoutes(self, [
      { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: ['192.168.1.2'] },
    ]);
    routes.problems.push({
      node: routes.node,
      problem: `InternalIP 192.168.1.1 is not an address of this node's interfaces: routes are planned as when it was on eth0 (192.168.1.0/24) for up to 30 s, and those through that subnet wait for it`,
    });
    const found = routeFindings(withRoutes(routes));
    expect(found.map((x) => x.problem)).toEqual([
      expect.stringMatching(/^this node: InternalIP 192\.168\.1\.1 is not/),
    ]);
    expect(found[0]!.fix).toMatch(/^put 192\.168\.1\.1 back on this node's interface/);
    expect(found[0]!.fix).toMatch(/keep_addr_on_down/);
    expect(found[0]!.fix).not.toMatch(/Node object/);
  });

  it('two peers claiming one InternalIP are a finding each (routed, but one of them to the wrong machine)', () => {
    const f = withRoutes(
      plannedRoutes(self, [
        { name: 'n2', podCIDRs: ['10.244.2.0/24'], internalIPs: ['192.168.1.2'] },
        { name: 'n3', podCIDRs: ['10.244.3.0/24'], internalIPs: ['192.168.1.2'] },
        { name: 'n4', podCIDRs: ['10.244.4.0/24'], internalIPs: ['192.168.1.4'] },
      ]),
    );
    const found = routeFindings(f);
    const said = 'traffic to the pods of each goes to whichever machine holds that address';
    expect(found.map((x) => x.problem)).toEqual([
      `peer n2: InternalIP 192.168.1.2 is also node n3's: ${said}`,
      `peer n3: InternalIP 192.168.1.2 is also node n2's: ${said}`,
    ]);
    expect(found[0]!.fix).toMatch(
      /^find which machine really has that address: delete the Node object .* \(kubectl delete node\), or give node n2's kubelet its own address/,
    );
    expect(runDoctor(f).ok).toBe(false);
  });

  it('what is only said is no finding: a malformed VTEP MAC routed directly, a nested CIDR of its own', () => {
    const links = [
      {
        ifindex: 2,
        name: 'eth0',
        addresses: [{ family: 4 as const, address: '192.168.1.1', prefixLen: 24 }],
      },
    ];
    const plan = desiredRoutes(
      { name: 'n1', podCIDRs: ['10.244.0.0/16', '10.244.1.0/24'], internalIPs: ['192.168.1.1'] },
      [{ name: 'n2', podCIDRs: ['10.245.2.0/24'], internalIPs: ['192.168.1.2'], vtepMacs: { 4: 'nope' } }],
      links,
      { mode: 'vxlan', overlay: [{ family: 4, ifindex: 7, name: 'trellis.v4' }] },
    );
    // Said by the planner, not lost: both are there to be left out.
    expect(plan.problems.map((p) => p.problem)).toEqual([
      'pod CIDR 10.244.1.0/24 lies inside 10.244.0.0/16; ignored',
      expect.stringMatching(/is not a usable VTEP MAC; routed directly/),
    ]);
    const f = healthy();
    agentValue(f).routes = {
      ...agentValue(f).routes,
      problems: plan.problems,
      peers: plan.decisions,
    };
    expect(routeFindings(f)).toEqual([]);
  });
});

describe('doctor: a meta-plugin (Multus) sorting before trellis hands pods on to it', () => {
  const multusShim = { cniVersion: '0.3.1', name: 'multus-cni-network', type: 'multus-shim' };
  const confFindings = (files: string[], confs: Record<string, unknown>) => {
    const f = healthy();
    f.confFiles = { ok: true, value: files };
    f.confsBefore = confs;
    return runDoctor(f).checks.find((c) => c.name === 'cni-config')!.findings;
  };

  it("Multus's 00-multus.conf first is no finding (thick: multus-shim; thin: trellis as its delegate or cluster network)", () => {
    expect(confFindings(['00-multus.conf', '10-trellis.conflist'], { '00-multus.conf': multusShim })).toEqual(
      [],
    );
    const thin = {
      name: 'multus-cni-network',
      type: 'multus',
      delegates: [
        { cniVersion: '1.0.0', name: 'trellis', plugins: [{ type: 'trellis' }, { type: 'portmap' }] },
      ],
    };
    expect(confFindings(['00-multus.conf', '10-trellis.conflist'], { '00-multus.conf': thin })).toEqual([]);
    // Naming trellis explicitly, a config between them is passed over too.
    for (const clusterNetwork of ['trellis', '/host/etc/cni/net.d/10-trellis.conflist']) {
      expect(
        confFindings(['00-multus.conf', '05-bridge.conflist', '10-trellis.conflist'], {
          '00-multus.conf': { ...multusShim, clusterNetwork },
          '05-bridge.conflist': { name: 'other', plugins: [{ type: 'bridge' }] },
        }),
      ).toEqual([]);
    }
  });

  it('Multus handing pods to another network, or to a config that sorts between, is a finding naming that one', () => {
    const other = confFindings(['00-multus.conf', '10-trellis.conflist'], {
      '00-multus.conf': { ...multusShim, clusterNetwork: 'flannel' },
    });
    expect(other.map((x) => x.problem)).toEqual([
      expect.stringMatching(/^00-multus\.conf sorts before 10-trellis/),
    ]);
    // Not "remove it": Multus stays, with trellis as its default network.
    expect(other[0]!.fix).toMatch(
      /^make trellis the default network of the meta-plugin \(Multus\).*"clusterNetwork": "trellis"/,
    );
    const between = confFindings(['00-multus.conf', '05-bridge.conflist', '10-trellis.conflist'], {
      '00-multus.conf': multusShim,
      '05-bridge.conflist': { name: 'other', plugins: [{ type: 'bridge' }] },
    });
    expect(between.map((x) => x.problem)).toEqual([
      expect.stringMatching(
        /^05-bridge\.conflist sorts before 10-trellis\.conflist.*the meta-plugin sorting first hands pods on to it/,
      ),
    ]);
    expect(between[0]!.fix).toMatch(/^remove \/etc\/cni\/net\.d\/05-bridge\.conflist /);
    // Unreadable: the runtime may load it all the same.
    expect(confFindings(['00-multus.conf', '10-trellis.conflist'], {})).toHaveLength(1);
  });
});
