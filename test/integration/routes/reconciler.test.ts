import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle, RouteInfo } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { applyRouteDiff } from '../../../pkg/routes/apply.ts';
import { type ReconcileInput, RouteReconciler } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';
import {
  ip,
  ipJson,
  NetnsPool,
  netnsSkipReason,
  nsPing,
  nsSysctl,
  type TestNetns,
} from '../../support/netns.ts';
import { monitorRoutes, type RouteMonitor } from '../../support/testbed/observe.ts';

/**
 * Node A (the agent's "host") and node B share 192.168.77.0/24 and fd00:77::/64 over a veth. B holds a pod
 * address of its pod CIDR on lo and routes A's pod CIDR back, so a route A programs is proven by a ping.
 * A also has a local pod (namespace behind a veth) with the host route the datapath would create: protocol
 * 126, scope link, no gateway. The reconciler must never touch it.
 */

interface KernelRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  type?: string;
  protocol?: string;
  scope?: string;
}

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

function routes(ns: string, family: '-4' | '-6'): KernelRoute[] {
  return ipJson<KernelRoute[]>(ns, family, 'route', 'show', 'table', 'main');
}
/** Our routes as text; the device of an IPv6 blackhole (the kernel reports lo) is left out. */
function ours(ns: string): string[] {
  const fmt = (r: KernelRoute) =>
    `${r.type === 'blackhole' ? 'blackhole ' : ''}${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev && r.type !== 'blackhole' ? ` dev ${r.dev}` : ''}${r.scope === 'link' ? ' scope link' : ''}`;
  return [...routes(ns, '-4'), ...routes(ns, '-6')]
    .filter((r) => r.protocol === '126')
    .map(fmt)
    .sort();
}

/** Records every route change the kernel announces in ns while it runs. */
describe.skipIf(netnsSkipReason !== undefined)('RouteReconciler on a real kernel (namespaces)', () => {
  const pool = new NetnsPool();
  const handles: NetlinkHandle[] = [];
  const monitors: RouteMonitor[] = [];
  let a: TestNetns;
  let b: TestNetns;
  let pod: TestNetns;

  const self: PeerNode = {
    name: 'node-a',
    podCIDRs: ['10.244.0.0/24', 'fd00:10:244::/64'],
    internalIPs: ['192.168.77.1', 'fd00:77::1'],
  };
  const nodeB: PeerNode = {
    name: 'node-b',
    podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
    internalIPs: ['192.168.77.2', 'fd00:77::2'],
  };
  const far: PeerNode = { name: 'node-far', podCIDRs: ['10.244.9.0/24'], internalIPs: ['203.0.113.9'] };

  function open(ns: TestNetns): NetlinkHandle {
    const h = port!.openNetlinkIn(ns.path);
    handles.push(h);
    return h;
  }
  const input = (peers: PeerNode[], synced = true): ReconcileInput => ({ synced, self, peers });

  beforeAll(() => {
    a = pool.add('rt-a');
    b = pool.add('rt-b');
    pod = pool.add('rt-pod');
    ip(a.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b.name);
    ip(a.name, 'link', 'add', 'vpod', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.name);
    for (const [ns, dev] of [
      [a, 'eth0'],
      [a, 'vpod'],
      [b, 'eth0'],
      [pod, 'eth0'],
    ] as const) {
      nsSysctl(ns.name, `net.ipv6.conf.${dev}.accept_dad`, '0');
      ip(ns.name, 'link', 'set', dev, 'up');
    }
    ip(a.name, 'addr', 'add', '192.168.77.1/24', 'dev', 'eth0');
    ip(a.name, 'addr', 'add', 'fd00:77::1/64', 'dev', 'eth0', 'nodad');
    ip(b.name, 'addr', 'add', '192.168.77.2/24', 'dev', 'eth0');
    ip(b.name, 'addr', 'add', '192.168.77.3/24', 'dev', 'eth0');
    ip(b.name, 'addr', 'add', 'fd00:77::2/64', 'dev', 'eth0', 'nodad');
    ip(b.name, 'addr', 'add', '10.244.1.1/32', 'dev', 'lo');
    ip(b.name, 'addr', 'add', 'fd00:10:244:1::1/128', 'dev', 'lo');
    ip(b.name, 'route', 'add', '10.244.0.0/24', 'via', '192.168.77.1');
    // The local pod and its datapath-style host route (protocol 126, scope link, no gateway).
    ip(pod.name, 'addr', 'add', '10.244.0.5/32', 'dev', 'eth0');
    ip(pod.name, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link');
    ip(pod.name, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0');
    ip(a.name, 'addr', 'add', '169.254.1.1/32', 'dev', 'vpod');
    ip(a.name, 'route', 'add', '10.244.0.5/32', 'dev', 'vpod', 'scope', 'link', 'proto', '126');
    // Someone else's static route through node B: not ours, must survive everything.
    ip(a.name, 'route', 'add', '10.250.0.0/24', 'via', '192.168.77.2', 'proto', 'static');
  });

  afterEach(async () => {
    for (const m of monitors.splice(0)) await m.stop();
  });

  afterAll(() => {
    for (const h of handles.splice(0)) h.close();
    pool.cleanup();
  });

  it('programs peer routes and own blackholes; traffic follows them; the pod host route is untouched', async () => {
    expect(nsPing(b.name, '10.244.1.1')).toBe(true);
    expect(nsPing(a.name, '10.244.1.1')).toBe(false); // no route yet
    expect(() => ip(a.name, 'route', 'get', '10.244.0.77')).toThrow(/unreachable/);
    const r = new RouteReconciler({ handle: open(a) });
    const report = await r.reconcile(input([self, nodeB, far]));
    expect(report).toMatchObject({
      added: 4,
      replaced: 0,
      removed: 0,
      unchanged: 0,
      errors: [],
      removalsDeferred: 0,
    });
    expect(report.problems.map((p) => p.node)).toEqual(['node-far']);
    expect(ours(a.name)).toEqual(
      [
        '10.244.0.5 dev vpod scope link',
        '10.244.1.0/24 via 192.168.77.2 dev eth0',
        'blackhole 10.244.0.0/24',
        'blackhole fd00:10:244::/64',
        'fd00:10:244:1::/64 via fd00:77::2 dev eth0',
      ].sort(),
    );
    expect(nsPing(a.name, '10.244.1.1')).toBe(true);
    expect(nsPing(a.name, 'fd00:10:244:1::1')).toBe(true);
    expect(nsPing(a.name, '10.244.0.5')).toBe(true); // local pod still reachable (more specific than the blackhole)
    // A deleted pod's address dies here (the kernel answers EINVAL for a blackhole), not at a default gateway.
    expect(() => ip(a.name, 'route', 'get', '10.244.0.77')).toThrow(/Invalid argument/);
    expect(() => ip(a.name, 'route', 'get', 'fd00:10:244::77')).toThrow(/Invalid argument|unreachable/);
    expect(ip(a.name, 'route', 'get', '10.244.0.5')).toMatch(/dev vpod/);
  });

  it('a pass whose orphan-nexthop prune fails still succeeds, and says so', async () => {
    const h = open(a);
    const failingPrune = Object.assign(Object.create(h) as NetlinkHandle, {
      pruneNexthops: async () => {
        throw new Error('RTM_DELNEXTHOP id 7: EBUSY');
      },
    });
    const before = ours(a.name);
    // A fresh reconciler plans from scratch, so its pass prunes (a quiet pass would not).
    const report = await new RouteReconciler({ handle: failingPrune }).reconcile(input([nodeB, self, far]));
    expect(report.errors).toEqual([]);
    expect(report.problems).toContainEqual({
      node: self.name,
      problem: 'orphaned nexthop objects not pruned: RTM_DELNEXTHOP id 7: EBUSY',
    });
    expect(ours(a.name)).toEqual(before);
  });

  it('a foreign route told of while a full pass runs concerns it (the pass may have read the table before): the watch asks for another', async () => {
    const h = open(a);
    const foreign: RouteInfo = {
      family: 4,
      dst: '10.99.0.0/24',
      gateway: '192.168.77.2',
      protocol: 4,
      table: 254,
    };
    const seen: boolean[] = [];
    const r: RouteReconciler = new RouteReconciler({
      handle: Object.assign(Object.create(h) as NetlinkHandle, {
        // Called by the pass after its first reads: as a notification handled between two of its awaits.
        pruneNexthops: async () => {
          seen.push(r.concernsPrefix(foreign), r.concernsPrefix({ ...foreign, table: 100 }));
          return (h as unknown as { pruneNexthops(): Promise<number> }).pruneNexthops();
        },
      }),
    });
    await r.reconcile(input([self, nodeB, far]));
    expect(seen).toEqual([true, false]);
    // After it, a foreign route on no prefix of ours is none of its business.
    expect(r.concernsPrefix(foreign)).toBe(false);
    expect(r.concernsPrefix({ ...foreign, dst: '10.244.1.0/24' })).toBe(true);
  });

  it('a restart over an unchanged cluster makes zero kernel changes', async () => {
    const before = ours(a.name);
    const mon = await monitorRoutes(a.name);
    monitors.push(mon);
    const fresh = new RouteReconciler({ handle: open(a) }); // a new process would have a new handle and no state
    const report = await fresh.reconcile(input([nodeB, self, far]));
    expect(report).toMatchObject({ added: 0, replaced: 0, removed: 0, unchanged: 4, errors: [] });
    await mon.stop();
    expect(mon.lines).toEqual([]);
    expect(ours(a.name)).toEqual(before);
  });

  it('names the devices its routes leave by, exact through per-node steps and quiet passes (the carrier watch follows them)', async () => {
    // A second uplink, to node C's subnet: a peer there is routed through eth1.
    const c = pool.add('rt-c');
    ip(a.name, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.name);
    try {
      ip(a.name, 'link', 'set', 'eth1', 'up');
      ip(c.name, 'link', 'set', 'eth0', 'up');
      ip(a.name, 'addr', 'add', '192.168.78.1/24', 'dev', 'eth1');
      ip(c.name, 'addr', 'add', '192.168.78.2/24', 'dev', 'eth0');
      const index = (dev: string): number =>
        ipJson<{ ifindex: number }[]>(a.name, 'link', 'show', 'dev', dev)[0]!.ifindex;
      const [eth0, eth1] = [index('eth0'), index('eth1')];
      const both = [eth0, eth1].sort((x, y) => x - y);
      const nodeC: PeerNode = { name: 'node-c', podCIDRs: ['10.244.3.0/24'], internalIPs: ['192.168.78.2'] };
      const r = new RouteReconciler({ handle: open(a) });
      expect((await r.reconcile(input([self, nodeB]))).routeDevices).toEqual([eth0]);
      // Node C joins between full passes: its step names the new device at once.
      expect(await r.reconcilePeer('node-c', nodeC)).toMatchObject({ kind: 'applied', routeDevices: both });
      expect(ours(a.name)).toContain('10.244.3.0/24 via 192.168.78.2 dev eth1');
      const quiet = await r.reconcile(input([self, nodeB, nodeC]));
      expect(quiet).toMatchObject({ quiet: true, routeDevices: both });
      // It leaves: the next quiet pass stops naming eth1.
      const gone = await r.reconcilePeer('node-c', undefined);
      expect(gone.kind).toBe('applied');
      expect(gone).not.toHaveProperty('routeDevices');
      expect(await r.reconcile(input([self, nodeB]))).toMatchObject({ quiet: true, routeDevices: [eth0] });
    } finally {
      ip(a.name, 'link', 'del', 'eth1');
    }
  });

  it('a step that escalates for a clash leaves no stale record: a later step claiming the clashing CIDR escalates too', async () => {
    const r = new RouteReconciler({ handle: open(a) });
    const nodeD: PeerNode = { name: 'node-d', podCIDRs: ['10.244.4.0/24'], internalIPs: ['192.168.77.4'] };
    await r.reconcile(input([self, nodeB, nodeD]));
    // node-d gets a new pod CIDR and an InternalIP inside node-b's pod CIDR (a virtual node's pod
    // address, say): a clash a full pass must judge for both.
    const moved = { ...nodeD, podCIDRs: ['10.244.6.0/24'], internalIPs: ['10.244.1.7'] };
    expect(await r.reconcilePeer('node-d', moved)).toMatchObject({ kind: 'full' });
    // Before the full pass (a backoff running steps), node-e claims node-d's new CIDR: judged against
    // node-d's old record it looked free, and was routed to node-e.
    const nodeE: PeerNode = { name: 'node-e', podCIDRs: ['10.244.6.0/24'], internalIPs: ['192.168.77.5'] };
    expect(await r.reconcilePeer('node-e', nodeE)).toMatchObject({ kind: 'full' });
    expect(ours(a.name)).not.toContain('10.244.6.0/24 via 192.168.77.5 dev eth0');
    // The full pass plans them all.
    await r.reconcile(input([self, nodeB, moved, nodeE]));
    await r.reconcile(input([self, nodeB]));
  });

  it('replaces in place when a node IP changes', async () => {
    const mon = await monitorRoutes(a.name);
    monitors.push(mon);
    const report = await new RouteReconciler({ handle: open(a) }).reconcile(
      input([self, { ...nodeB, internalIPs: ['192.168.77.3', 'fd00:77::2'] }]),
    );
    expect(report).toMatchObject({ added: 0, replaced: 1, removed: 0, unchanged: 3 });
    await mon.stop();
    const events = mon.lines;
    // The route names its own nexthop object (ours, protocol 126), which `ip monitor` prints as nhid.
    expect(events.some((l) => /^10\.244\.1\.0\/24 (nhid \d+ )?via 192\.168\.77\.3 /.test(l))).toBe(true);
    expect(events.some((l) => l.startsWith('Deleted'))).toBe(false);
    expect(ours(a.name)).toContain('10.244.1.0/24 via 192.168.77.3 dev eth0');
    expect(nsPing(a.name, '10.244.1.1')).toBe(true);
  });

  it('a pass over unchanged inputs plans nothing, yet repairs routes changed, deleted or added behind its back', async () => {
    const r = new RouteReconciler({ handle: open(a) });
    const first = await r.reconcile(input([self, nodeB]));
    expect(first.quiet).toBeUndefined();
    const want = ours(a.name);
    expect(want).toContain('10.244.1.0/24 via 192.168.77.2 dev eth0');
    expect(want).toContain('fd00:10:244:1::/64 via fd00:77::2 dev eth0');
    // Same inputs, untouched kernel (both families: the dump's spelling matches the planner's).
    const idle = await r.reconcile(input([nodeB, self]));
    expect(idle).toMatchObject({ quiet: true, added: 0, replaced: 0, removed: 0, unchanged: 4, errors: [] });
    expect(idle.decisions.map((d) => `${d.node} ${d.family} ${d.path}`).sort()).toEqual(
      first.decisions.map((d) => `${d.node} ${d.family} ${d.path}`).sort(),
    );
    // Behind its back: a peer route deleted, another re-pointed, our blackhole deleted, a stray route of ours.
    ip(a.name, 'route', 'del', '10.244.1.0/24');
    ip(
      a.name,
      '-6',
      'route',
      'replace',
      'fd00:10:244:1::/64',
      'via',
      'fd00:77::3',
      'dev',
      'eth0',
      'proto',
      '126',
    );
    ip(a.name, 'route', 'del', 'blackhole', '10.244.0.0/24');
    ip(a.name, 'route', 'add', '10.244.7.0/24', 'via', '192.168.77.2', 'proto', '126');
    const repaired = await r.reconcile(input([self, nodeB]));
    expect(repaired.quiet).toBeUndefined();
    expect(repaired).toMatchObject({ added: 2, replaced: 1, removed: 1, unchanged: 1, errors: [] });
    expect(ours(a.name)).toEqual(want);
    expect(nsPing(a.name, '10.244.1.1')).toBe(true);
    // A foreign route on a peer's key is a conflict for the full diff to report, never a quiet pass.
    ip(a.name, 'route', 'del', '10.244.1.0/24');
    ip(a.name, 'route', 'add', '10.244.1.0/24', 'via', '192.168.77.3', 'proto', 'static');
    const held = await r.reconcile(input([self, nodeB]));
    expect(held.quiet).toBeUndefined();
    expect(held.conflicts.map((c) => c.desired.dst)).toEqual(['10.244.1.0/24']);
    ip(a.name, 'route', 'del', '10.244.1.0/24');
    expect(await r.reconcile(input([self, nodeB]))).toMatchObject({ added: 1, errors: [], conflicts: [] });
    expect(ours(a.name)).toEqual(want);
    expect(await r.reconcile(input([self, nodeB]))).toMatchObject({ quiet: true, unchanged: 4 });
  });

  it('does not remove stale routes before the first full sync, then removes only its own', async () => {
    const r = new RouteReconciler({ handle: open(a) });
    const early = await r.reconcile(input([self], false));
    expect(early).toMatchObject({ removed: 0, removalsDeferred: 2 });
    expect(ours(a.name)).toContain('fd00:10:244:1::/64 via fd00:77::2 dev eth0');
    const synced = await r.reconcile(input([self], true));
    expect(synced).toMatchObject({ removed: 2, removalsDeferred: 0, errors: [] });
    expect(ours(a.name)).toEqual([
      '10.244.0.5 dev vpod scope link',
      'blackhole 10.244.0.0/24',
      'blackhole fd00:10:244::/64',
    ]);
    const all = routes(a.name, '-4').map((x) => x.dst);
    expect(all).toContain('10.250.0.0/24'); // the foreign static route survived
    expect(nsPing(a.name, '10.244.0.5')).toBe(true);
  });

  it('never overwrites a foreign route the dump parser skips (prohibit, multipath) on a peer prefix, and reports it as a conflict', async () => {
    // Routes of kinds RouteInfo cannot express are not in the diff's view of the table; the pass's
    // new routes are created exclusively, so such a route makes the add fail instead of being replaced.
    // That is a conflict like a readable foreign route's, not a failed write: the pass stays clean (per-node
    // steps go on) and the route comes once the holder is gone.
    const peers: PeerNode[] = [
      { name: 'n-prohibited', podCIDRs: ['10.247.1.0/24'], internalIPs: ['192.168.77.31'] },
      { name: 'n-ecmp', podCIDRs: ['10.247.2.0/24'], internalIPs: ['192.168.77.32'] },
      { name: 'n-free', podCIDRs: ['10.247.3.0/24'], internalIPs: ['192.168.77.33'] },
    ];
    ip(a.name, 'route', 'add', 'prohibit', '10.247.1.0/24', 'proto', 'static');
    ip(
      a.name,
      'route',
      'add',
      '10.247.2.0/24',
      'proto',
      'static',
      'nexthop',
      'via',
      '192.168.77.2',
      'nexthop',
      'via',
      '192.168.77.3',
    );
    const foreign = () =>
      routes(a.name, '-4')
        .filter((x) => x.dst === '10.247.1.0/24' || x.dst === '10.247.2.0/24')
        .map((x) => JSON.stringify(x))
        .sort();
    const before = foreign();
    expect(before).toHaveLength(2);
    try {
      const r = new RouteReconciler({ handle: open(a) });
      const report = await r.reconcile(input([self, ...peers]));
      expect(report.errors).toEqual([]);
      expect(report.conflicts.map((c) => [c.desired.dst, c.existing.dst, c.existing.unreadable])).toEqual([
        ['10.247.1.0/24', '10.247.1.0/24', true],
        ['10.247.2.0/24', '10.247.2.0/24', true],
      ]);
      expect(report.added).toBe(1);
      expect(foreign()).toEqual(before);
      expect(ours(a.name).some((x) => x.startsWith('10.247.3.0/24 '))).toBe(true);
      // A clean pass: a peer's change is one step, not another full pass.
      const moved = { ...peers[2]!, internalIPs: ['192.168.77.34'] };
      expect(await r.reconcilePeer(moved.name, moved)).toMatchObject({ kind: 'applied', node: 'n-free' });
      expect(ours(a.name).some((x) => x.startsWith('10.247.3.0/24 via 192.168.77.34 '))).toBe(true);
      // The holder goes: the next full pass adds the route (no orphaned nexthop object from the refusals).
      ip(a.name, 'route', 'del', '10.247.2.0/24');
      const again = await r.reconcile(input([self, peers[0]!, peers[1]!, moved]));
      expect(again.conflicts.map((c) => c.desired.dst)).toEqual(['10.247.1.0/24']);
      expect(again).toMatchObject({ added: 1, errors: [] });
      expect(ours(a.name).some((x) => x.startsWith('10.247.2.0/24 via 192.168.77.32 '))).toBe(true);
      const objects = ip(a.name, 'nexthop', 'show', 'protocol', '126').trim().split('\n');
      expect(objects).toHaveLength(ours(a.name).filter((x) => x.includes(' via ')).length);
    } finally {
      ip(a.name, 'route', 'del', '10.247.1.0/24');
      ip(a.name, 'route', 'del', '10.247.2.0/24');
      await new RouteReconciler({ handle: open(a) }).reconcile(input([self, nodeB, far]));
    }
  });

  it('a route of ours a dump left out (an IPv6 dump the table changed under) is written in place, not called a conflict', async () => {
    await new RouteReconciler({ handle: open(a) }).reconcile(input([self, nodeB, far]));
    const before = ours(a.name);
    const h = open(a);
    let omitted = 0;
    const omitting = Object.assign(Object.create(h) as NetlinkHandle, {
      listRoutes: async (filter: Parameters<NetlinkHandle['listRoutes']>[0]) =>
        (await h.listRoutes(filter)).filter((r) => {
          if (omitted > 0 || r.dst !== 'fd00:10:244:1::/64' || r.protocol !== 126) return true;
          omitted++;
          return false;
        }),
    });
    // A fresh reconciler plans from scratch, so the diff sees the table as the dump gave it.
    const report = await new RouteReconciler({ handle: omitting }).reconcile(input([self, nodeB, far]));
    expect(omitted).toBe(1);
    expect(report.conflicts).toEqual([]);
    expect(report.errors).toEqual([]);
    expect(ours(a.name)).toEqual(before);
  });

  it('reports, and does not overwrite, a foreign route holding the prefix a peer claims', async () => {
    const claimant: PeerNode = {
      name: 'node-static',
      podCIDRs: ['10.250.0.0/24'],
      internalIPs: ['192.168.77.3'],
    };
    const report = await new RouteReconciler({ handle: open(a) }).reconcile(input([self, claimant]));
    expect(report.conflicts.map((c) => [c.desired.dst, c.existing.protocol])).toEqual([['10.250.0.0/24', 4]]);
    expect(report).toMatchObject({ added: 0, replaced: 0, errors: [] });
    const r = routes(a.name, '-4').find((x) => x.dst === '10.250.0.0/24');
    expect(r).toMatchObject({ gateway: '192.168.77.2', protocol: 'static' });
  });

  it('continues past individual kernel failures and reports them; the next pass retries', async () => {
    const many: PeerNode[] = Array.from({ length: 40 }, (_, i) => ({
      name: `n${String(i).padStart(2, '0')}`,
      podCIDRs: [`10.245.${i}.0/24`],
      internalIPs: [`192.168.77.${100 + i}`],
    }));
    const h = open(a);
    const links = (await import('../../../pkg/routes/local-links.ts')).readLocalLinks;
    const real = await links(h);
    // A stale view of the interfaces: 10.99.0.0/16 on an ifindex that no longer exists (the kernel refuses the route).
    const localLinks = [
      ...real,
      {
        ifindex: 9999,
        name: 'gone0',
        addresses: [{ family: 4 as const, address: '10.99.0.1', prefixLen: 16 }],
      },
    ];
    const broken: PeerNode = { name: 'n-broken', podCIDRs: ['10.246.0.0/24'], internalIPs: ['10.99.0.7'] };
    const r = new RouteReconciler({ handle: h });
    const report = await r.reconcile({ synced: true, self, peers: [...many, broken], localLinks });
    expect(report.errors.map((e) => `${e.route.dst}: ${e.error.message}`)).toEqual([
      // Written through a nexthop object, a device that does not exist is refused with EINVAL.
      expect.stringMatching(/^10\.246\.0\.0\/24: .*dev #9999.*(EINVAL|ENODEV|ENETUNREACH)/),
    ]);
    expect(report.errors[0]).toMatchObject({ op: 'add', route: { dst: '10.246.0.0/24' } });
    expect(report.added).toBe(40);
    expect(ours(a.name).filter((x) => x.startsWith('10.245.'))).toHaveLength(40);
    expect(ours(a.name).some((x) => x.startsWith('10.246.0.0/24'))).toBe(false);
    // The refusal keeps per-node steps for every other peer (one error that never clears would
    // otherwise send every Node event to a full pass), escalates the broken one's ...
    const added: PeerNode = { name: 'n-new', podCIDRs: ['10.245.99.0/24'], internalIPs: ['192.168.77.99'] };
    const step = await r.reconcilePeer('n-new', added);
    expect(step).toMatchObject({ kind: 'applied', node: 'n-new' });
    expect(ours(a.name)).toContain('10.245.99.0/24 via 192.168.77.99 dev eth0');
    // ... its report still carries the error (status shows it) ...
    if (step.kind === 'applied')
      expect(step.report().errors.map((e) => e.route.dst)).toEqual(['10.246.0.0/24']);
    expect(await r.reconcilePeer('n-broken', { ...broken, internalIPs: ['10.99.0.8'] })).toEqual({
      kind: 'full',
      reason: 'the kernel refused a route of node n-broken (10.246.0.0/24) at the last full pass',
    });
    // ... and a full pass over unchanged inputs is no quiet one: it tries the refused route again.
    const retried = await r.reconcile({ synced: true, self, peers: [...many, added, broken], localLinks });
    expect(retried.quiet).toBeUndefined();
    expect(retried.errors.map((e) => e.route.dst)).toEqual(['10.246.0.0/24']);
    expect(await r.reconcilePeer('n-new', undefined)).toMatchObject({ kind: 'applied' });
    // Next pass, with the peer's subnet now really on a link: only the missing route is written.
    ip(a.name, 'addr', 'add', '10.99.0.1/16', 'dev', 'eth0');
    try {
      const again = await r.reconcile({ synced: true, self, peers: [...many, broken] });
      expect(again).toMatchObject({ added: 1, replaced: 0, removed: 0, errors: [] });
      expect(ours(a.name).filter((x) => x.startsWith('10.246.0.0/24 '))).toHaveLength(1);
      // And removing all of them again leaves the own blackholes and the pod route.
      const cleared = await r.reconcile(input([self]));
      expect(cleared.removed).toBe(41);
    } finally {
      ip(a.name, 'addr', 'del', '10.99.0.1/16', 'dev', 'eth0');
    }
  });

  it('with only the NetlinkHandle port (no settled burst), a failed burst is redone route by route', async () => {
    const real = open(a);
    // The same kernel handle seen through the narrow port only: replaceRoutes throws on the first failure.
    const narrow: NetlinkHandle = {
      ...Object.fromEntries(
        (
          [
            'getLink',
            'getLinkByIndex',
            'listLinks',
            'createVeth',
            'setLinkUp',
            'setLinkMtu',
            'deleteLink',
            'listAddresses',
            'addAddress',
            'listRoutes',
            'replaceRoute',
            'deleteRoute',
            'replaceRoutes',
            'replaceNeighbour',
            'deleteNeighbour',
            'listNeighbours',
            'replaceFdb',
            'deleteFdb',
            'listFdb',
            'close',
          ] as const
        ).map((k) => [k, (real[k] as (...x: unknown[]) => unknown).bind(real)]),
      ),
    } as unknown as NetlinkHandle;
    const routesToAdd = Array.from({ length: 20 }, (_, i) => ({
      family: 4 as const,
      dst: `10.247.${i}.0/24`,
      gateway: '192.168.77.2',
      ifindex: ipJson<{ ifindex: number }[]>(a.name, 'link', 'show', 'eth0')[0]!.ifindex,
      protocol: 126,
      type: 'unicast' as const,
    }));
    const bad = {
      family: 4 as const,
      dst: '10.248.0.0/24',
      gateway: '10.99.0.7',
      ifindex: 9999,
      protocol: 126,
    };
    const res = await applyRouteDiff(narrow, {
      add: [...routesToAdd.slice(0, 10), bad, ...routesToAdd.slice(10)],
      replace: [],
      remove: [],
    });
    expect(res.added).toBe(20);
    expect(res.errors.map((e) => e.route.dst)).toEqual(['10.248.0.0/24']);
    expect(ours(a.name).filter((x) => x.startsWith('10.247.'))).toHaveLength(20);
    const del = await applyRouteDiff(narrow, { add: [], replace: [], remove: routesToAdd });
    expect(del).toMatchObject({ removed: 20, errors: [] });
  });

  it('applyRouteDiff never deletes what it is not given, and deleting an absent route is not an error', async () => {
    const h = open(a);
    const res = await applyRouteDiff(h, {
      add: [],
      replace: [],
      remove: [{ family: 4, dst: '10.244.77.0/24', gateway: '192.168.77.2', ifindex: 2, protocol: 126 }],
    });
    expect(res).toEqual({ added: 0, replaced: 0, removed: 1, errors: [], taken: [] });
    expect(ours(a.name)).toContain('10.244.0.5 dev vpod scope link');
  });
});
