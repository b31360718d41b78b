import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../../../pkg/agent/agent.ts';
import { BackgroundDeleter } from '../../../pkg/datapath/background-deleter.ts';
import { hostVethName } from '../../../pkg/datapath/names.ts';
import type { RouteInfo } from '../../../pkg/datapath/ports.ts';
import type { Lease } from '../../../pkg/ipam/index.ts';
import { type HttpListener, startAdminServer } from '../../../pkg/observe/http-server.ts';
import { formatLeases, formatStatus } from '../../../pkg/ops/format.ts';
import { missingPeers, peerRouteStates } from '../../../pkg/ops/peer-coverage.ts';
import { leasesView, routesView, statusView } from '../../../pkg/ops/views.ts';
import { routeKey } from '../../../pkg/routes/diff.ts';
import { runOps } from './run-ops.ts';

const via = (dst: string, gateway: string, ifindex = 2, protocol = 126): RouteInfo => ({
  family: dst.includes(':') ? 6 : 4,
  dst,
  gateway,
  ifindex,
  protocol,
  scope: 'universe',
  type: 'unicast',
});
const blackhole = (dst: string): RouteInfo => ({
  family: 4,
  dst,
  protocol: 126,
  type: 'blackhole',
  scope: 'universe',
});

const links = [
  { index: 1, name: 'lo', kind: undefined, mac: '', mtu: 65536, up: true },
  { index: 2, name: 'eth0', kind: undefined, mac: '', mtu: 1500, up: true },
  { index: 3, name: 'eth1', kind: undefined, mac: '', mtu: 1500, up: true },
];

function snapshot(): AgentSnapshot {
  return {
    node: 'n1',
    standalone: true,
    mode: 'auto',
    mtu: 1500,
    podCIDRs: ['10.244.1.0/24'],
    internalIPs: ['192.168.1.10'],
    ready: true,
    notReadyReason: undefined,
    socket: '/run/trellis/cni.sock',
    stateDir: '/var/lib/trellis',
    cniConfDir: '/etc/cni/net.d',
    cniBinDir: '/opt/cni/bin',
    leases: [
      {
        containerId: 'b'.repeat(64),
        ifname: 'eth0',
        netns: '/var/run/netns/p2',
        podNamespace: 'ns',
        podName: 'late',
        addresses: [{ family: 4, address: '10.244.1.3', range: '10.244.1.0/24' }],
        createdAt: '2026-01-02T00:00:00Z',
      },
      {
        containerId: 'a'.repeat(64),
        ifname: 'eth0',
        addresses: [{ family: 4, address: '10.244.1.2', range: '10.244.1.0/24' }],
        createdAt: '2026-01-01T00:00:00Z',
      },
    ],
    ipamUsage: [{ family: 4, range: '10.244.1.0/24', capacity: 253, used: 2 }],
    watch: undefined,
    mssClamp: [],
    masquerade: { enabled: true, noMasqueradeCIDRs: ['10.0.0.0/8'] },
  };
}

describe('routesView', () => {
  it('classifies every prefix: ok, missing, differs, conflict, stale; pod host routes are not drift', () => {
    const desired = [
      via('10.244.2.0/24', '192.168.1.2'),
      via('10.244.3.0/24', '192.168.1.3'),
      via('10.244.4.0/24', '192.168.1.4'),
      via('10.244.5.0/24', '192.168.1.5'),
      blackhole('10.244.1.0/24'),
    ];
    const programmed: RouteInfo[] = [
      via('10.244.2.0/24', '192.168.1.2'),
      via('10.244.4.0/24', '192.168.1.40', 3),
      { ...via('10.244.5.0/24', '10.0.0.1'), protocol: 4 },
      via('10.244.9.0/24', '192.168.1.9'),
      blackhole('10.244.1.0/24'),
      { family: 4, dst: '10.244.1.7/32', ifindex: 9, protocol: 126, scope: 'link', type: 'unicast' },
      { family: 4, dst: '0.0.0.0/0', gateway: '192.168.1.254', ifindex: 2, protocol: 3 },
    ];
    const v = routesView('n1', { synced: true, desired, programmed, problems: [], decisions: [], links });
    expect(v.routes.map((r) => [r.dst, r.state, r.want, r.have])).toEqual([
      ['10.244.2.0/24', 'ok', 'via 192.168.1.2 dev eth0 proto 126', 'via 192.168.1.2 dev eth0 proto 126'],
      ['10.244.3.0/24', 'missing', 'via 192.168.1.3 dev eth0 proto 126', ''],
      [
        '10.244.4.0/24',
        'differs',
        'via 192.168.1.4 dev eth0 proto 126',
        'via 192.168.1.40 dev eth1 proto 126',
      ],
      ['10.244.5.0/24', 'conflict', 'via 192.168.1.5 dev eth0 proto 126', 'via 10.0.0.1 dev eth0 proto 4'],
      ['10.244.1.0/24', 'ok', 'blackhole proto 126', 'blackhole proto 126'],
      ['10.244.9.0/24', 'stale', '', 'via 192.168.1.9 dev eth0 proto 126'],
    ]);
    expect(v.drift).toBe(4);
  });

  it("a route the agent holds back while this node's InternalIP is off its link is held, with why; an ok one stays ok", () => {
    const desired = [via('10.244.2.0/24', '192.168.1.2'), via('10.244.3.0/24', '192.168.1.3')];
    const reason = "waits for this node's InternalIP 192.168.1.1 back on eth0 (up to 30 s)";
    const v = routesView('n1', {
      synced: true,
      desired,
      programmed: [via('10.244.2.0/24', '192.168.1.2')],
      problems: [],
      decisions: [],
      links,
      held: desired.map((r) => ({ key: routeKey(r), reason })),
    });
    expect(v.routes.map((r) => [r.dst, r.state, r.reason])).toEqual([
      ['10.244.2.0/24', 'ok', undefined],
      ['10.244.3.0/24', 'held', reason],
    ]);
    // Still drift: pods cannot reach that peer meanwhile.
    expect(v.drift).toBe(1);
  });

  it('before a list of Nodes with this node in it, calls none of our routes stale (the agent keeps them)', () => {
    const programmed = [via('10.244.2.0/24', '192.168.1.2'), via('10.244.3.0/24', '192.168.1.3')];
    const v = routesView('n1', {
      synced: false,
      desired: [],
      programmed,
      problems: [],
      decisions: [],
      links,
    });
    expect(v.routes).toEqual([]);
    expect(v.drift).toBe(0);
    expect(v.synced).toBe(false);
  });

  it('shows a desired route held by a route it can list only by key as a conflict, not missing', () => {
    const desired = [via('10.244.2.0/24', '192.168.1.2'), via('10.244.3.0/24', '192.168.1.3')];
    const listed = routesView('n1', {
      synced: true,
      desired,
      programmed: [{ family: 4, dst: '10.244.2.0/24', protocol: 4, unreadable: true }],
      problems: [],
      decisions: [],
      links,
    });
    expect(listed.routes.map((r) => [r.dst, r.state, r.have, r.unreadable])).toEqual([
      ['10.244.2.0/24', 'conflict', 'unreadable route', true],
      ['10.244.3.0/24', 'missing', '', undefined],
    ]);
  });
});

describe('peerRouteStates', () => {
  it('flags a dual-stack peer with no InternalIP of one family', () => {
    const s = peerRouteStates(
      {
        decisions: [
          {
            node: 'n2',
            family: 4,
            path: 'direct',
            nodeIP: '1.1.1.2',
            ifindex: 2,
            linkName: 'eth0',
            podCIDRs: ['10.244.2.0/24'],
          },
        ],
        problems: [{ node: 'n2', problem: 'no IPv6 InternalIP for pod CIDR fd00:2::/64; skipped' }],
        errors: [],
        conflicts: [],
      },
      'n1',
    );
    expect(s.map((x) => [x.peer, x.family, x.path, x.ok])).toEqual([
      ['n2', '4', 'direct', true],
      ['n2', '6', 'skipped', false],
    ]);
    expect(missingPeers(s)).toEqual(['n2/v6']);
  });

  it('a route the pass held back makes its peer broken, with the reason', () => {
    const direct = (node: string, cidr: string) => ({
      node,
      family: 4 as const,
      path: 'direct' as const,
      nodeIP: '192.168.10.3',
      ifindex: 2,
      linkName: 'eth0',
      podCIDRs: [cidr],
    });
    const s = peerRouteStates(
      {
        decisions: [direct('n2', '10.244.2.0/24'), direct('n3', '10.244.3.0/24')],
        problems: [],
        errors: [],
        conflicts: [],
        heldBack: [
          {
            route: { family: 4, dst: '10.244.3.0/24', gateway: '192.168.10.3', ifindex: 2 },
            reason: "waits for this node's InternalIP 192.168.10.2 back on eth0 (up to 30 s)",
          },
        ],
      },
      'n1',
    );
    expect(s.map((x) => [x.peer, x.ok, x.reason])).toEqual([
      ['n2', true, undefined],
      [
        'n3',
        false,
        "route held back: waits for this node's InternalIP 192.168.10.2 back on eth0 (up to 30 s)",
      ],
    ]);
  });
});

describe('status and leases views', () => {
  it('status carries capacity as a string; leases are sorted by age with their host veth', () => {
    const s = statusView(snapshot(), '0.1.0', 'v24');
    expect(s.ipam).toEqual([{ family: 4, range: '10.244.1.0/24', capacity: '253', used: 2 }]);
    expect(s).not.toHaveProperty('notReadyReason');
    expect(s.masquerade).toEqual({ enabled: true, noMasqueradeCIDRs: ['10.0.0.0/8'] });
    expect(s).not.toHaveProperty('mssClamp'); // none: left out, as older agents leave it
    expect(s).not.toHaveProperty('cniConfigPublished');
    expect(statusView({ ...snapshot(), cniConfigPublished: false }, '0.1.0', 'v24').cniConfigPublished).toBe(
      false,
    );
    expect(statusView({ ...snapshot(), mssClamp: ['trellis.v4'] }, '0.1.0', 'v24').mssClamp).toEqual([
      'trellis.v4',
    ]);
    const l = leasesView(snapshot());
    expect(l.leases.map((x) => [x.addresses[0], x.podName, x.netns])).toEqual([
      ['10.244.1.2', '', ''],
      ['10.244.1.3', 'late', '/var/run/netns/p2'],
    ]);
    expect(l.leases[0]!.hostVeth).toMatch(/^trl[0-9a-f]{12}$/);
  });

  it('status says whether veth pairs are made ahead, and how many wait; nothing when --netns-dir is off', () => {
    expect(statusView(snapshot(), '0.1.0', 'v24')).not.toHaveProperty('preparedPairs');
    expect(formatStatus(statusView(snapshot(), '0.1.0', 'v24'))).not.toContain('veth pairs ahead');
    const on = { dir: '/var/run/netns', watching: true, waiting: 2 };
    const text = formatStatus(statusView({ ...snapshot(), preparedPairs: on }, '0.1.0', 'v24'));
    expect(text).toMatch(
      /veth pairs ahead:\s+made as pod namespaces appear in \/var\/run\/netns; 2 waiting for their ADD/,
    );
    const off = formatStatus(
      statusView({ ...snapshot(), preparedPairs: { ...on, watching: false, waiting: 0 } }, '0.1.0', 'v24'),
    );
    expect(off).toContain('/var/run/netns not watched (the log says why): ADD makes every pair');
  });
});

describe('status: the host firewall line', () => {
  it('a check that worked once and fails since says so before the old verdict', () => {
    const fw = { checkedAt: '2026-12-01T10:00:00.000Z', blocks: [] };
    const ok = formatStatus(statusView({ ...snapshot(), forwardFirewall: fw }, '0.1.0', 'v24'));
    expect(ok).toMatch(/host firewall:\s+lets pod traffic through \(checked 2026-12-01T10:00:00.000Z\)/);
    const failing = formatStatus(
      statusView(
        { ...snapshot(), forwardFirewall: { ...fw, error: 'iptables-legacy-save: exit status 1' } },
        '0.1.0',
        'v24',
      ),
    );
    expect(failing).toMatch(
      /host firewall:\s+UNREADABLE since the check of 2026-12-01T10:00:00.000Z: iptables-legacy-save: exit status 1; then: lets pod traffic through/,
    );
  });

  it('a legacy table it could not read is never called letting pod traffic through', () => {
    const fw = {
      checkedAt: '2026-12-01T10:00:00.000Z',
      blocks: [],
      unreadTables: [{ family: 'iptables-legacy' as const, error: 'spawn iptables-legacy-save ENOENT' }],
    };
    const text = formatStatus(statusView({ ...snapshot(), forwardFirewall: fw }, '0.1.0', 'v24'));
    expect(text).not.toMatch(/lets pod traffic through/);
    expect(text).toMatch(
      /host firewall:\s+no drop of pod traffic found in the tables it read \(checked 2026-12-01T10:00:00.000Z; trellis-agent doctor gives the fix\); CANNOT READ iptables-legacy filter: spawn iptables-legacy-save ENOENT \(what it drops as last read\)/,
    );
  });
});

describe('admin socket and the CLI over it', () => {
  let dir: string | undefined;
  let server: HttpListener | undefined;
  afterEach(async () => {
    await server?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const run = (cmd: 'status' | 'routes' | 'leases', args: string[]) => runOps(cmd, args);

  it('serves /status /routes /leases on a 0600 socket; the CLI prints tables or JSON', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-admin-'));
    const path = join(dir, 'run', 'admin.sock');
    let drift = false;
    let readiness: { ok: boolean; checks: Record<string, string> } | undefined;
    server = await startAdminServer(path, {
      '/status': () => statusView(snapshot(), '0.1.0', 'v24', readiness),
      '/routes': () =>
        routesView('n1', {
          synced: true,
          desired: [via('10.244.2.0/24', '192.168.1.2')],
          programmed: drift ? [] : [via('10.244.2.0/24', '192.168.1.2')],
          problems: [],
          decisions: [],
          links,
        }),
      '/leases': () => leasesView(snapshot()),
    });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    // The socket's umask is not the process's while it waits to listen.
    const meanwhile = join(dir, 'meanwhile');
    const second = startAdminServer(join(dir, 'second', 'admin.sock'), {});
    mkdirSync(meanwhile, { mode: 0o755 });
    await (await second).close();
    expect(statSync(meanwhile).mode & 0o777).toBe(0o755);
    const st = await run('status', ['--admin-socket', path]);
    expect(st.code).toBe(0);
    expect(st.out).toMatch(/^node:\s+n1$/m);
    expect(st.out).not.toMatch(/MSS/);
    expect(st.out).toMatch(/^IPv4\s+10\.244\.1\.0\/24\s+2\s+253$/m);
    const js = await run('status', ['--admin-socket', path, '--json']);
    expect(JSON.parse(js.out)).toMatchObject({ node: 'n1', ready: true, mtu: 1500 });
    // Serving ADD, but /readyz says no (a reconcile pass waiting): status says so and exits 1.
    const waiting = 'the last reconcile pass is waiting: Node n1 has no spec.podCIDRs yet';
    readiness = { ok: false, checks: { agent: 'ok', reconcile: waiting, nodeWatch: 'ok' } };
    const notReady = await run('status', ['--admin-socket', path]);
    expect(notReady.code).toBe(1);
    expect(notReady.out).toMatch(
      new RegExp(`^ready:\\s+no: reconcile: ${waiting} \\(CNI ADD is served\\)$`, 'm'),
    );
    readiness = {
      ok: true,
      checks: { agent: 'ok', reconcile: 'ok', nodeWatch: 'ok (standalone: no watch)' },
    };
    expect((await run('status', ['--admin-socket', path])).code).toBe(0);
    // --socket derives the admin socket next to it.
    expect((await run('leases', ['--socket', join(dir, 'run', 'cni.sock')])).out).toMatch(
      /^ns\/late\s+10\.244\.1\.3\s/m,
    );
    expect((await run('routes', ['--admin-socket', path])).code).toBe(0);
    drift = true;
    const r = await run('routes', ['--admin-socket', path]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^missing\s+10\.244\.2\.0\/24\s+via 192\.168\.1\.2 dev eth0 proto 126\s+-$/m);
    expect(r.out).toMatch(/1 routes, 1 drifted/);
  });

  it('an absent agent: exit 1 and a message that says what to check', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trl-admin-'));
    const r = await run('status', ['--admin-socket', join(dir, 'admin.sock')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no such socket: is the agent running on this node\?/);
    expect((await run('status', ['--bogus'])).code).toBe(2);
  });
});

describe('leasesView: what the agent knows that the CLI may not', () => {
  it("carries the agent's verdict on each pod namespace and the attachments it holds", () => {
    const lease = (id: string, netns: string): Lease => ({
      containerId: id,
      ifname: 'eth0',
      netns,
      addresses: [{ family: 4, address: `10.244.1.${id.length}`, range: '10.244.1.0/24' }],
      createdAt: '2026-12-01T00:00:00.000Z',
    });
    const s = {
      ...snapshot(),
      leases: [lease('aaaa', '/proc/708/ns/net'), lease('bbbbb', '/var/run/netns/gone'), lease('cccccc', '')],
      held: [{ containerId: 'dddd', ifname: 'eth0' }],
    };
    const v = leasesView(s, (l) => l.netns?.startsWith('/proc/') === true);
    expect(v.leases.map((l) => [l.containerId, l.netnsAlive])).toEqual([
      ['aaaa', true],
      ['bbbbb', false],
      ['cccccc', undefined],
    ]);
    expect(v.held).toEqual([{ containerId: 'dddd', ifname: 'eth0', hostVeth: hostVethName('dddd', 'eth0') }]);
    expect(formatLeases(v)).toContain('/var/run/netns/gone (gone)');
    expect(formatLeases(v)).toMatch(/1 held \(lease record quarantined/);
  });
});

describe('leases table: what CNI_ARGS and CNI_NETNS gave, unchecked', () => {
  it('shows control characters as escapes: a pod name cannot forge a row or move the cursor', () => {
    const forged: Lease = {
      containerId: 'eeee',
      ifname: 'eth0',
      netns: '/var/run/netns/ok\u0007',
      podNamespace: 'default',
      podName: 'x\u001b[2K\r\u001b[1Ajunk\nkube-system/coredns',
      addresses: [{ family: 4, address: '10.244.1.9', range: '10.244.1.0/24' }],
      createdAt: '2026-12-01T00:00:00.000Z',
    };
    const text = formatLeases(leasesView({ ...snapshot(), leases: [forged], held: [] }, () => true));
    expect([...text].filter((ch) => ch !== '\n' && ch.charCodeAt(0) < 0x20)).toEqual([]);
    expect(text.split('\n').filter((l) => l.includes('coredns'))).toHaveLength(1); // one row, not two
    expect(text).toContain('default/x\\u001b[2K\\u000d\\u001b[1Ajunk\\u000akube-system/coredns');
    expect(text).toContain('/var/run/netns/ok\\u0007');
  });
});

describe('leases view: veths on their way out', () => {
  it('names the veths whose deletion the BackgroundDeleter holds, until it is done; nothing when none', async () => {
    const deleter = new BackgroundDeleter(() => {});
    let finish!: () => void;
    const kernel = new Promise<void>((r) => {
      finish = r;
    });
    const name = hostVethName('c'.repeat(64), 'eth0');
    deleter.schedule(name, () => kernel); // a DEL released the lease; the kernel is still at the pair
    expect(leasesView({ ...snapshot(), vethsInFlight: deleter.pendingNames() }).vethsInFlight).toEqual([
      name,
    ]);
    finish();
    await deleter.wait(name);
    expect(deleter.pendingNames()).toEqual([]);
    expect(leasesView({ ...snapshot(), vethsInFlight: deleter.pendingNames() })).not.toHaveProperty(
      'vethsInFlight',
    );
    expect(leasesView(snapshot())).not.toHaveProperty('vethsInFlight'); // older agents' snapshots
  });

  it('leases prints them under the table, only when there are any', () => {
    const [a, b] = [hostVethName('c'.repeat(64), 'eth0'), hostVethName('d'.repeat(64), 'eth0')];
    expect(formatLeases(leasesView({ ...snapshot(), vethsInFlight: [a] }))).toContain(
      `\n1 veth in flight (being deleted after DEL or GC, or a CNI call under way): ${a}\n`,
    );
    expect(formatLeases(leasesView({ ...snapshot(), vethsInFlight: [a, b] }))).toMatch(
      new RegExp(`\\n2 veths in flight \\(.*\\): ${a}, ${b}\\n$`),
    );
    expect(formatLeases(leasesView({ ...snapshot(), vethsInFlight: [] }))).not.toMatch(/in flight/);
    // A drain: the count, the first ten names.
    const many = Array.from({ length: 25 }, (_, i) => hostVethName(String(i).padStart(64, '0'), 'eth0'));
    expect(formatLeases(leasesView({ ...snapshot(), vethsInFlight: many }))).toContain(
      `25 veths in flight (being deleted after DEL or GC, or a CNI call under way): ${many.slice(0, 10).join(', ')} and 15 more (--json lists them)\n`,
    );
  });
});

describe('routes view: the holder of a conflict', () => {
  it("carries the foreign route's metric (IPv6 keys a route by it), and only on conflict rows", () => {
    const ours = { ...via('fd00:2::/64', 'fe80::2'), metric: 1024 };
    const foreign = { ...via('fd00:2::/64', 'fe80::9', 12, 186), metric: 512 };
    const v = routesView('n1', {
      synced: true,
      desired: [via('fd00:2::/64', 'fe80::2'), via('fd00:3::/64', 'fe80::3')],
      programmed: [foreign, { ...ours, dst: 'fd00:3::/64', gateway: 'fe80::3' }],
      problems: [],
      decisions: [],
      links,
    });
    expect(v.routes.map((r) => [r.dst, r.state, r.have, r.haveMetric])).toEqual([
      ['fd00:2::/64', 'conflict', 'via fe80::9 dev #12 proto 186', 512],
      ['fd00:3::/64', 'ok', 'via fe80::3 dev eth0 proto 126', undefined],
    ]);
  });
});
