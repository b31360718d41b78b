import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VTEP_MAC_ANNOTATIONS, vtepMac } from '../../../pkg/vxlan/index.ts';
import { ip, ipJson } from '../../support/netns.ts';
import { tcpMss } from '../../support/tcp-mss.ts';
import {
  Testbed,
  type TestbedNode,
  type TestbedPod,
  testbedSkipReason,
} from '../../support/testbed/index.ts';

/**
 * The overlay as a cluster runs it: real agents (Kubernetes mode against the test API server) on two L2
 * segments joined by a router that knows no pod CIDRs. In auto mode node-1 and node-2 share segment 0
 * (direct routes) and node-3 sits alone on segment 1 (VXLAN). Which path a packet took is read from the
 * kernel: the route (`via <node IP> dev eth0` vs `via <VTEP> dev trellis.v4 onlink`) and the VXLAN
 * device's packet counters.
 */
const skip = testbedSkipReason();

type Route = { dst: string; gateway?: string; dev?: string; flags?: string[] };
type Link = {
  ifname: string;
  mtu: number;
  address: string;
  flags?: string[];
  stats64?: { tx: { packets: number } };
};

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until probe() returns a value; throws after timeoutMs. */
async function eventually<T>(
  timeoutMs: number,
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not true after ${timeoutMs} ms`);
    await sleep(50);
  }
}

function link(node: TestbedNode, dev: string): Link {
  return ipJson<Link[]>(node.ns, '-s', 'link', 'show', 'dev', dev)[0]!;
}

function routeTo(tb: Testbed, from: string, to: TestbedNode, family: 4 | 6): Route | undefined {
  const dst = to.plan.podCIDRs[family === 4 ? 0 : 1];
  return tb.routes(from, family).find((r) => r.dst === dst) as Route | undefined;
}

const title = 'cluster: VXLAN between segments, direct routes within one (auto mode, real agents)';
describe.skipIf(skip !== undefined)(skip === undefined ? title : `${title} (skipped: ${skip})`, () => {
  let tb: Testbed;
  let pods: TestbedPod[];

  beforeAll(async () => {
    tb = await Testbed.create({ segments: [{ nodes: 2 }, { nodes: 1 }] });
    pods = [await tb.addPod('node-1'), await tb.addPod('node-2'), await tb.addPod('node-3')];
  }, 120_000);

  afterAll(async () => {
    if (tb === undefined) return;
    await tb.teardown();
    expect(tb.leftovers()).toEqual([]);
  });

  it('every agent publishes its deterministic VTEP MACs on its Node and its devices carry them', async () => {
    for (const node of tb.nodes()) {
      const annotations = await eventually(5000, `${node.name} VTEP annotations`, async () => {
        const obj = (await tb.api.getNode(node.name)) as {
          metadata: { annotations?: Record<string, string> };
        };
        const a = obj.metadata.annotations ?? {};
        return a[VTEP_MAC_ANNOTATIONS[4]] !== undefined && a[VTEP_MAC_ANNOTATIONS[6]] !== undefined
          ? a
          : undefined;
      });
      expect(annotations[VTEP_MAC_ANNOTATIONS[4]]).toBe(vtepMac(node.name, 4));
      expect(annotations[VTEP_MAC_ANNOTATIONS[6]]).toBe(vtepMac(node.name, 6));
      expect(link(node, 'trellis.v4').address).toBe(vtepMac(node.name, 4));
      expect(link(node, 'trellis.v6').address).toBe(vtepMac(node.name, 6));
      // Dual-stack underlay of MTU 1500: the IPv4 device 1450, the IPv6 one 1430; pod interfaces get
      // the full 1500, and only their routes off the node 1430.
      expect([link(node, 'trellis.v4').mtu, link(node, 'trellis.v6').mtu]).toEqual([1450, 1430]);
      expect(tb.conflist(node.name).plugins[0]).toMatchObject({ mtu: 1500 });
    }
  });

  it('same segment: direct routes via the node IP on eth0; other segment: onlink via the VTEP on trellis.vN', async () => {
    const [n1, n2, n3] = [tb.node('node-1'), tb.node('node-2'), tb.node('node-3')];
    for (const family of [4, 6] as const) {
      const dev = family === 4 ? 'trellis.v4' : 'trellis.v6';
      expect(routeTo(tb, 'node-1', n2, family)).toMatchObject({
        gateway: family === 4 ? n2.plan.v4 : n2.plan.v6,
        dev: 'eth0',
      });
      const vtep = (n: TestbedNode) => n.plan.podCIDRs[family === 4 ? 0 : 1]!.split('/')[0]!;
      const tunnel = await eventually(10_000, `node-1 -> node-3 IPv${family} through ${dev}`, () => {
        const r = routeTo(tb, 'node-1', n3, family);
        return r?.dev === dev ? r : undefined;
      });
      expect(tunnel).toMatchObject({ gateway: vtep(n3), dev, flags: ['onlink'] });
      const back = await eventually(10_000, `node-3 -> node-1 IPv${family}`, () => {
        const r = routeTo(tb, 'node-3', n1, family);
        return r?.dev === dev ? r : undefined;
      });
      expect(back).toMatchObject({ gateway: vtep(n1), flags: ['onlink'] });
    }
  });

  it('pods talk across the router through the tunnel and within the segment without it (both families)', async () => {
    const [p1, p2, p3] = pods as [TestbedPod, TestbedPod, TestbedPod];
    const n1 = tb.node('node-1');
    const matrix = await tb.connectivityMatrix();
    expect(matrix.failures).toEqual([]);

    const before = {
      v4: link(n1, 'trellis.v4').stats64!.tx.packets,
      v6: link(n1, 'trellis.v6').stats64!.tx.packets,
    };
    for (let i = 0; i < 5; i++) expect((await tb.ping(p1.ns, p2.v4)).rttMs).toBeDefined();
    for (let i = 0; i < 5; i++) expect((await tb.ping(p1.ns, p2.v6)).rttMs).toBeDefined();
    const mid = {
      v4: link(n1, 'trellis.v4').stats64!.tx.packets,
      v6: link(n1, 'trellis.v6').stats64!.tx.packets,
    };
    expect(mid).toEqual(before); // same segment: nothing went through the tunnel
    for (let i = 0; i < 5; i++) expect((await tb.ping(p1.ns, p3.v4)).rttMs).toBeDefined();
    for (let i = 0; i < 5; i++) expect((await tb.ping(p1.ns, p3.v6)).rttMs).toBeDefined();
    expect(link(n1, 'trellis.v4').stats64!.tx.packets).toBeGreaterThanOrEqual(mid.v4 + 5);
    expect(link(n1, 'trellis.v6').stats64!.tx.packets).toBeGreaterThanOrEqual(mid.v6 + 5);
  });

  it('pods keep the full MTU to every node: TCP into the tunnel is clamped, other packets learn its MTU from the node', async () => {
    const [p1, p2, p3] = pods as [TestbedPod, TestbedPod, TestbedPod];
    const p4 = await tb.addPod('node-1');
    type PodRoute = { dst: string; gateway?: string; metrics?: { mtu?: number }[] };
    const routes = (family: 4 | 6) =>
      ipJson<PodRoute[]>(p1.ns, `-${family}`, 'route', 'show', 'dev', 'eth0')
        .filter((r) => r.gateway !== undefined)
        .map((r) => ({ dst: r.dst, mtu: r.metrics?.[0]?.mtu }));
    // auto mode: no route MTU in the pod (vxlan mode holds the default routes to the overlay's).
    expect(routes(4)).toEqual([{ dst: 'default', mtu: undefined }]);
    expect(routes(6)).toEqual(expect.arrayContaining([{ dst: 'default', mtu: undefined }]));
    // TCP: each node lowers the MSS of the SYN it sends into its tunnel, so no packet is ever too big
    // (first: the pings below teach the pods' kernels the tunnel's MTU, which TCP would use too). 12
    // bytes of every segment are the timestamp option, so ss's mss is the MSS less 12.
    const clamp = (node: string): number => {
      const text = spawnSync(
        'ip',
        ['netns', 'exec', tb.node(node).ns, 'nft', 'list', 'chain', 'inet', 'trellis', 'forward'],
        {
          encoding: 'utf8',
        },
      ).stdout;
      const m = /counter packets (\d+)/.exec(text);
      if (m === null) throw new Error(`${node}: no MSS clamp chain in inet trellis`);
      return Number(m[1]);
    };
    const [before1, before3] = [clamp('node-1'), clamp('node-3')];
    const v4 = await tcpMss(p1.ns, p3.ns, p3.v4);
    expect(v4).toEqual({ client: 1450 - 40 - 12, server: 1450 - 40 - 12, received: 1 << 20 });
    const v6 = await tcpMss(p1.ns, p3.ns, p3.v6);
    expect(v6).toEqual({ client: 1430 - 60 - 12, server: 1430 - 60 - 12, received: 1 << 20 });
    // The SYNs node-1 tunnelled, the SYN-ACKs node-3 did.
    // (At least: a SYN the kernel retransmits is clamped again.)
    const tunnelled = [clamp('node-1'), clamp('node-3')] as const;
    expect(tunnelled[0] - before1).toBeGreaterThanOrEqual(2);
    expect(tunnelled[1] - before3).toBeGreaterThanOrEqual(2);
    // The direct peer's connection keeps the full MTU's segments.
    expect(await tcpMss(p1.ns, p2.ns, p2.v4)).toEqual({ client: 1448, server: 1448, received: 1 << 20 });
    expect(clamp('node-1')).toBe(tunnelled[0]); // nothing clamped on the direct path
    // Don't-fragment pings of a full 1500-byte packet: through on the node and to the direct peer.
    const ping = (ns: string, addr: string, size: number) => {
      const r = spawnSync(
        'ip',
        ['netns', 'exec', ns, 'ping', '-c1', '-W2', '-M', 'do', '-s', String(size), addr],
        {
          encoding: 'utf8',
        },
      );
      return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
    };
    for (const [to, what] of [
      [p4, 'same node'],
      [p2, 'direct peer'],
    ] as const) {
      expect(ping(p1.ns, to.v4, 1472).ok, `IPv4 ${what}`).toBe(true);
      expect(ping(p1.ns, to.v6, 1452).ok, `IPv6 ${what}`).toBe(true);
    }
    // Into the tunnel (trellis.v4 1450, trellis.v6 1430): node-1, the first hop, answers the first
    // one with the tunnel's MTU, the pod's kernel keeps it for that destination, and what fits passes.
    // Without DF (IPv4), node-1 fragments it on the way in, and node-3 the answer.
    const dont = spawnSync(
      'ip',
      ['netns', 'exec', p1.ns, 'ping', '-c1', '-W2', '-M', 'dont', '-s', '1472', p3.v4],
      {
        encoding: 'utf8',
      },
    );
    expect(dont.status, `${dont.stdout}${dont.stderr}`).toBe(0);
    const first = ping(p1.ns, p3.v4, 1472);
    expect(first.ok).toBe(false);
    expect(first.out).toMatch(/Frag needed and DF set \(mtu = 1450\)/);
    expect(ping(p1.ns, p3.v4, 1472).out).toMatch(/message too long, mtu=1450/);
    expect(ping(p1.ns, p3.v4, 1450 - 28).ok).toBe(true);
    const first6 = ping(p1.ns, p3.v6, 1452);
    expect(first6.ok).toBe(false);
    expect(first6.out).toMatch(/Packet too big: mtu=1430/);
    expect(ping(p1.ns, p3.v6, 1430 - 48).ok).toBe(true);
  });

  /** What node-1 holds for node-3 on its VXLAN device of `family`: neighbour, FDB entry, route. */
  function node1Holds(family: 4 | 6, n3: TestbedNode = tb.node('node-3')): Record<string, boolean> {
    const n1 = tb.node('node-1');
    const vtep3 = n3.plan.podCIDRs[family === 4 ? 0 : 1]!.split('/')[0]!;
    const neighbours = ipJson<{ dst: string }[]>(n1.ns, 'neigh', 'show', 'dev', `trellis.v${family}`).map(
      (n) => n.dst,
    );
    const r = spawnSync('bridge', ['-n', n1.ns, '-j', 'fdb', 'show', 'dev', `trellis.v${family}`], {
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const fdbMacs = (JSON.parse(r.stdout || '[]') as { mac: string }[]).map((e) => e.mac);
    return {
      neighbour: neighbours.includes(vtep3),
      fdb: fdbMacs.includes(vtepMac('node-3', family)),
      route: routeTo(tb, 'node-1', n3, family) !== undefined,
    };
  }

  it('an FDB entry and a neighbour deleted by hand are back within seconds, not at the next resync', async () => {
    const n1 = tb.node('node-1');
    const all = { neighbour: true, fdb: true, route: true };
    expect(node1Holds(4)).toEqual(all);
    const mac = vtepMac('node-3', 4);
    const vtep3 = tb.node('node-3').plan.podCIDRs[0]!.split('/')[0]!;
    const fdb = spawnSync('bridge', [
      '-n',
      n1.ns,
      'fdb',
      'del',
      mac,
      'dev',
      'trellis.v4',
      'dst',
      tb.node('node-3').plan.v4,
      'self',
    ]);
    expect(fdb.status, fdb.stderr?.toString()).toBe(0);
    ip(n1.ns, 'neigh', 'del', vtep3, 'dev', 'trellis.v4'); // throws unless it was there to delete
    // The bed's resync period is a minute: only the deletion notices bring them back this soon.
    await eventually(5_000, 'node-1 puts back the entries for node-3', () =>
      JSON.stringify(node1Holds(4)) === JSON.stringify(all) ? true : undefined,
    );
  });

  it('a neighbour the kernel learned on a VXLAN device (not one the plan keeps) going away wakes no pass', async () => {
    const n1 = tb.node('node-1');
    // The pass the test above woke logs its line after it wrote the entries back: let it land first.
    const passes = () => n1.logs.filter((l) => l.msg === 'reconciled').length;
    for (let seen = -1; seen !== passes(); ) {
      seen = passes();
      await new Promise((r) => setTimeout(r, 300));
    }
    const mark = n1.logs.length;
    // What NDP leaves when a peer's device solicits from its link-local: an entry the kernel ages
    // out later, its deletion announced like that of a hand-deleted entry of ours. (A full pass
    // removes such entries itself, as its own: one that ran meanwhile took it first.)
    const learned = [
      ['fe80::99', '02:00:00:00:00:99', 'trellis.v6'],
      ['10.244.77.7', '02:00:00:00:00:98', 'trellis.v4'],
    ] as const;
    for (const [address, mac, dev] of learned) {
      ip(n1.ns, 'neigh', 'add', address, 'lladdr', mac, 'dev', dev, 'nud', 'stale');
    }
    for (const [address, , dev] of learned) {
      const del = spawnSync('ip', ['-n', n1.ns, 'neigh', 'del', address, 'dev', dev]);
      expect(del.status === 0 || String(del.stderr).includes('No such file'), String(del.stderr)).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 500));
    const woken = n1.logs
      .slice(mark)
      .flatMap((l) => (l.msg === 'reconciled' ? ((l.why as string[] | undefined) ?? []) : []));
    expect(woken.filter((w) => / entry of trellis\.v[46] was deleted/.test(w))).toEqual([]);
  });

  it("a VXLAN device's MTU changed by hand is set back within seconds, not at the next resync", async () => {
    const n1 = tb.node('node-1');
    const mtu = link(n1, 'trellis.v4').mtu;
    const mark = n1.logs.length;
    ip(n1.ns, 'link', 'set', 'dev', 'trellis.v4', 'mtu', String(mtu - 100));
    // The bed's resync period is a minute: only the link notification brings it back this soon.
    await eventually(5_000, "node-1 sets trellis.v4's MTU back", () =>
      link(n1, 'trellis.v4').mtu === mtu ? true : undefined,
    );
    // It was changed (not refused): the agent saw the hand-set MTU and reconciled.
    const line = await eventually(2_000, 'the MTU change is logged', () =>
      n1.logs.slice(mark).find((l) => l.msg === 'MTU of a VXLAN device changed; reconciling now'),
    );
    expect(line).toMatchObject({ link: 'trellis.v4', mtu: mtu - 100, was: mtu });
  });

  it('a VXLAN device set down by hand is set up again within seconds, its tunnel route back', async () => {
    const n1 = tb.node('node-1');
    const n3 = tb.node('node-3');
    expect(routeTo(tb, 'node-1', n3, 4)).toMatchObject({ dev: 'trellis.v4' });
    const mark = n1.logs.length;
    ip(n1.ns, 'link', 'set', 'dev', 'trellis.v4', 'down');
    // Down, the kernel drops the routes through it; the resync (a minute here) would be the next pass.
    await eventually(5_000, 'node-1 sets trellis.v4 up again', () =>
      link(n1, 'trellis.v4').flags?.includes('UP') === true ? true : undefined,
    );
    await eventually(5_000, "node-1's route to node-3's pods through trellis.v4 is back", () =>
      routeTo(tb, 'node-1', n3, 4)?.dev === 'trellis.v4' ? true : undefined,
    );
    const line = await eventually(2_000, 'the agent says why it reconciled', () =>
      n1.logs
        .slice(mark)
        .find((l) => l.msg === 'a VXLAN device of trellis was set down; setting it up again'),
    );
    expect(line).toMatchObject({ link: 'trellis.v4' });
    expect((await tb.ping(pods[0]!.ns, pods[2]!.v4)).rttMs).toBeDefined();
  });

  it('a VXLAN device deleted by hand is made again, its tunnel route back; the log says deleted, not set down', async () => {
    const n1 = tb.node('node-1');
    const n3 = tb.node('node-3');
    expect(routeTo(tb, 'node-1', n3, 4)).toMatchObject({ dev: 'trellis.v4' });
    const mark = n1.logs.length;
    ip(n1.ns, 'link', 'del', 'trellis.v4');
    await eventually(5_000, "node-1's route to node-3's pods through a new trellis.v4", () =>
      routeTo(tb, 'node-1', n3, 4)?.dev === 'trellis.v4' ? true : undefined,
    );
    await eventually(2_000, 'the deletion is logged', () =>
      n1.logs
        .slice(mark)
        .find((l) => l.msg === 'a link routes to peers leave by was deleted; reconciling now'),
    );
    expect((await tb.ping(pods[0]!.ns, pods[2]!.v4)).rttMs).toBeDefined();
    expect(n1.logs.slice(mark).map((l) => l.msg)).not.toContain(
      'a VXLAN device of trellis was set down; setting it up again',
    );
  });

  it('a deleted node loses its neighbour, FDB entry and tunnel route on the other segment', async () => {
    const n3 = tb.node('node-3'); // its plan outlives its deletion
    const holds = (family: 4 | 6) => node1Holds(family, n3);
    const all = { neighbour: true, fdb: true, route: true };
    expect(holds(4)).toEqual(all);
    expect(holds(6)).toEqual(all);

    const n1 = tb.node('node-1');
    const mark = n1.logs.length;
    await tb.deleteNode('node-3');
    const none = { neighbour: false, fdb: false, route: false };
    await eventually(10_000, 'node-1 forgets node-3', () =>
      JSON.stringify([holds(4), holds(6)]) === JSON.stringify([none, none]) ? true : undefined,
    );
    expect(holds(4)).toEqual(none);
    expect(holds(6)).toEqual(none);
    // The entries it deleted itself wake no full pass (a hand-deleted one does: the test above).
    const after = () => n1.logs.slice(mark);
    await eventually(5_000, "the step that removed node-3's entries is logged", () =>
      after().some((l) => l.msg === 'reconciled node' && l.peer === 'node-3' && Number(l.neighbours) > 0)
        ? true
        : undefined,
    );
    await new Promise((r) => setTimeout(r, 500));
    const woken = after().flatMap((l) =>
      l.msg === 'reconciled' ? ((l.why as string[] | undefined) ?? []) : [],
    );
    expect(woken.filter((w) => / entry of trellis\.v[46] was deleted/.test(w))).toEqual([]);
  });
});

const modesTitle =
  'cluster: --mode vxlan tunnels within a segment, --mode host-gw never tunnels (real agents)';
describe.skipIf(skip !== undefined)(
  skip === undefined ? modesTitle : `${modesTitle} (skipped: ${skip})`,
  () => {
    it('vxlan: two nodes on one segment still talk through trellis.v4/v6', async () => {
      const tb = await Testbed.create({ segments: [{ nodes: 2 }], mode: 'vxlan' });
      try {
        const [n1, n2] = [tb.node('node-1'), tb.node('node-2')];
        for (const family of [4, 6] as const) {
          const dev = family === 4 ? 'trellis.v4' : 'trellis.v6';
          const r = await eventually(10_000, `node-1 -> node-2 IPv${family} via ${dev}`, () => {
            const x = routeTo(tb, 'node-1', n2, family);
            return x?.dev === dev ? x : undefined;
          });
          expect(r).toMatchObject({
            gateway: n2.plan.podCIDRs[family === 4 ? 0 : 1]!.split('/')[0],
            flags: ['onlink'],
          });
        }
        const [p1, p2] = [await tb.addPod('node-1'), await tb.addPod('node-2')];
        const tx = link(n1, 'trellis.v4').stats64!.tx.packets;
        expect((await tb.ping(p1.ns, p2.v4)).rttMs).toBeDefined();
        expect((await tb.ping(p2.ns, p1.v6)).rttMs).toBeDefined();
        expect(link(n1, 'trellis.v4').stats64!.tx.packets).toBeGreaterThan(tx);
        // Every peer is tunnelled: the pods' routes off the node carry the overlay MTU (1430, the IPv6
        // overhead on this dual-stack bed), their own node's pod CIDR the full one, so a large
        // don't-fragment packet is refused in the sender instead of being lost on the way.
        type PodRoute = { dst: string; gateway?: string; metrics?: { mtu?: number }[] };
        const routes = ipJson<PodRoute[]>(p1.ns, '-4', 'route', 'show', 'dev', 'eth0')
          .filter((r) => r.gateway !== undefined)
          .map((r) => ({ dst: r.dst, mtu: r.metrics?.[0]?.mtu }));
        expect(routes).toEqual([
          { dst: 'default', mtu: 1430 },
          { dst: n1.plan.podCIDRs[0], mtu: undefined },
        ]);
        const big = spawnSync(
          'ip',
          ['netns', 'exec', p1.ns, 'ping', '-c1', '-W2', '-M', 'do', '-s', '1472', p2.v4],
          {
            encoding: 'utf8',
          },
        );
        expect(`${big.stdout}${big.stderr}`).toMatch(/message too long, mtu=1430/);
      } finally {
        await tb.teardown();
      }
      expect(tb.leftovers()).toEqual([]);
    }, 90_000);

    it('host-gw: no devices, no annotations, full MTU; the node on the other segment is unreachable', async () => {
      const tb = await Testbed.create({ segments: [{ nodes: 1 }, { nodes: 1 }], mode: 'host-gw' });
      try {
        const [n1, n2] = [tb.node('node-1'), tb.node('node-2')];
        expect(ipJson(n1.ns, 'link', 'show', 'type', 'vxlan')).toEqual([]);
        const obj = (await tb.api.getNode('node-1')) as {
          metadata: { annotations?: Record<string, string> };
        };
        expect(obj.metadata.annotations?.[VTEP_MAC_ANNOTATIONS[4]]).toBeUndefined();
        expect(tb.conflist('node-1').plugins[0]).toMatchObject({ mtu: 1500 });
        expect(routeTo(tb, 'node-1', n2, 4)).toBeUndefined();
        expect(n1.logs.some((l) => String(l.problem ?? '').startsWith('unreachable with host-gw'))).toBe(
          true,
        );
      } finally {
        await tb.teardown();
      }
      expect(tb.leftovers()).toEqual([]);
    }, 90_000);
  },
);
