import { describe, expect, it } from 'vitest';
import { TRELLIS_ROUTE_PROTOCOL } from '../../../pkg/datapath/ports.ts';
import { desiredRoutes, vtepAddress } from '../../../pkg/routes/desired.ts';
import { diffRoutes, isOwnedRoute } from '../../../pkg/routes/diff.ts';
import type { LocalLink, OverlayDevice, PeerNode, RoutingMode } from '../../../pkg/routes/types.ts';
import { vtepMac } from '../../../pkg/vxlan/mac.ts';

const self: PeerNode = {
  name: 'node-a',
  podCIDRs: ['10.244.1.0/24', 'fd00:244:1::/64'],
  internalIPs: ['192.168.10.2', 'fd00:10::2'],
};
const links: LocalLink[] = [
  {
    ifindex: 2,
    name: 'eth0',
    addresses: [
      { family: 4, address: '192.168.10.2', prefixLen: 24 },
      { family: 6, address: 'fd00:10::2', prefixLen: 64 },
    ],
  },
  // Our own VXLAN devices: host-length VTEP addresses and link-local ones define no subnet.
  { ifindex: 7, name: 'trellis.v4', addresses: [{ family: 4, address: '10.244.1.0', prefixLen: 32 }] },
  {
    ifindex: 8,
    name: 'trellis.v6',
    addresses: [
      { family: 6, address: 'fd00:244:1::', prefixLen: 128 },
      { family: 6, address: 'fe80::1', prefixLen: 64 },
    ],
  },
];
const overlay: OverlayDevice[] = [
  { family: 4, ifindex: 7, name: 'trellis.v4' },
  { family: 6, ifindex: 8, name: 'trellis.v6' },
];
const macs = (name: string) => ({ 4: vtepMac(name, 4), 6: vtepMac(name, 6) });
/** Same subnet as node-a. */
const near: PeerNode = {
  name: 'node-b',
  podCIDRs: ['10.244.2.0/24', 'fd00:244:2::/64'],
  internalIPs: ['192.168.10.3', 'fd00:10::3'],
  vtepMacs: macs('node-b'),
};
/** Behind a router. */
const far: PeerNode = {
  name: 'node-c',
  podCIDRs: ['10.244.3.0/24', 'fd00:244:3::/64'],
  internalIPs: ['192.168.20.2', 'fd00:20::2'],
  vtepMacs: macs('node-c'),
};

function plan(mode: RoutingMode, peers: PeerNode[], dev: OverlayDevice[] = overlay) {
  return desiredRoutes(self, [self, ...peers], links, { mode, overlay: dev });
}
const paths = (p: ReturnType<typeof plan>) => p.decisions.map((d) => `${d.node} v${d.family} ${d.path}`);

describe('desiredRoutes: per-mode decisions', () => {
  it('auto: direct to a node on our subnet, VXLAN to one behind a router', () => {
    const p = plan('auto', [near, far]);
    expect(paths(p)).toEqual(['node-b v4 direct', 'node-b v6 direct', 'node-c v4 vxlan', 'node-c v6 vxlan']);
    expect(p.problems).toEqual([]);
    expect(p.decisions[2]).toEqual({
      node: 'node-c',
      family: 4,
      path: 'vxlan',
      nodeIP: '192.168.20.2',
      vtepIP: '10.244.3.0',
      vtepMac: vtepMac('node-c', 4),
      ifindex: 7,
      linkName: 'trellis.v4',
      podCIDRs: ['10.244.3.0/24'],
    });
    const peerRoutes = p.routes.filter((r) => r.type === 'unicast');
    expect(peerRoutes).toEqual([
      {
        family: 4,
        dst: '10.244.2.0/24',
        gateway: '192.168.10.3',
        ifindex: 2,
        protocol: TRELLIS_ROUTE_PROTOCOL,
        scope: 'universe',
        type: 'unicast',
      },
      {
        family: 4,
        dst: '10.244.3.0/24',
        gateway: '10.244.3.0',
        ifindex: 7,
        onlink: true,
        protocol: TRELLIS_ROUTE_PROTOCOL,
        scope: 'universe',
        type: 'unicast',
      },
      {
        family: 6,
        dst: 'fd00:244:2::/64',
        gateway: 'fd00:10::3',
        ifindex: 2,
        protocol: TRELLIS_ROUTE_PROTOCOL,
        scope: 'universe',
        type: 'unicast',
      },
      {
        family: 6,
        dst: 'fd00:244:3::/64',
        gateway: 'fd00:244:3::',
        ifindex: 8,
        onlink: true,
        protocol: TRELLIS_ROUTE_PROTOCOL,
        scope: 'universe',
        type: 'unicast',
      },
    ]);
  });

  it('vxlan: a peer that published no VTEP (its agent still host-gw, mid rolling change) is routed directly when on our subnet, and unreachable behind a router', () => {
    const { vtepMacs: _near, ...nearHostGw } = near;
    const { vtepMacs: _far, ...farHostGw } = far;
    const p = plan('vxlan', [nearHostGw, farHostGw]);
    expect(paths(p)).toEqual([
      'node-b v4 direct',
      'node-b v6 direct',
      'node-c v4 unreachable',
      'node-c v6 unreachable',
    ]);
    expect(p.problems.map((x) => x.node)).toEqual(['node-c', 'node-c']);
    // Once it publishes its VTEP, it is tunnelled to like every other peer.
    expect(paths(plan('vxlan', [near, far]))).toEqual([
      'node-b v4 vxlan',
      'node-b v6 vxlan',
      'node-c v4 vxlan',
      'node-c v6 vxlan',
    ]);
  });

  describe('a multi-homed node (a second leg on the subnet of a peer behind the router)', () => {
    const leg: LocalLink = {
      ifindex: 3,
      name: 'eth1',
      addresses: [
        { family: 4, address: '192.168.20.9', prefixLen: 24 },
        { family: 6, address: 'fd00:20::9', prefixLen: 64 },
      ],
    };
    const withLeg = [...links, leg];

    it('auto: tunnels to it as it tunnels back (one path both ways: strict rp_filter drops the other)', () => {
      const p = desiredRoutes(self, [self, near, far], withLeg, { mode: 'auto', overlay });
      expect(paths(p)).toEqual([
        'node-b v4 direct',
        'node-b v6 direct',
        'node-c v4 vxlan',
        'node-c v6 vxlan',
      ]);
      expect(p.problems).toEqual([]);
    });

    it('host-gw: routes it over the second leg (no tunnel to fall back on)', () => {
      const p = desiredRoutes(self, [self, near, far], withLeg, { mode: 'host-gw' });
      expect(paths(p)).toEqual([
        'node-b v4 direct',
        'node-b v6 direct',
        'node-c v4 direct',
        'node-c v6 direct',
      ]);
      expect(p.decisions[2]).toMatchObject({ nodeIP: '192.168.20.2', linkName: 'eth1' });
    });

    it('auto, without VXLAN devices: unreachable, saying why the leg was not used', () => {
      const p = desiredRoutes(self, [self, far], withLeg, { mode: 'auto', overlay: [] });
      expect(p.problems.map((x) => x.problem)[0]).toBe(
        "unreachable: InternalIP 192.168.20.2 is on eth1's subnet 192.168.20.0/24 (its longest match here), which does not hold this node's InternalIP (the node would route back through VXLAN); VXLAN: this node has no IPv4 VXLAN device",
      );
    });

    describe('our InternalIP on no connected subnet (a /32 and /128 on lo, from a range of its own)', () => {
      const loopbackIp: PeerNode = { ...self, internalIPs: ['10.9.9.9', 'fd00:99::9'] };
      const lo: LocalLink = {
        ifindex: 1,
        name: 'lo',
        addresses: [
          { family: 4, address: '10.9.9.9', prefixLen: 32 },
          { family: 6, address: 'fd00:99::9', prefixLen: 128 },
        ],
      };
      const plan = (o: { mode: RoutingMode; overlay?: OverlayDevice[] }) =>
        desiredRoutes(loopbackIp, [loopbackIp, near, far], [lo, ...withLeg], o);

      it('auto: every peer through VXLAN (no peer finds our InternalIP on its subnet, so each tunnels back)', () => {
        const p = plan({ mode: 'auto', overlay });
        expect(paths(p)).toEqual([
          'node-b v4 vxlan',
          'node-b v6 vxlan',
          'node-c v4 vxlan',
          'node-c v6 vxlan',
        ]);
        expect(p.problems).toEqual([]);
        expect(p.decisions[0]).toMatchObject({ nodeIP: '192.168.10.3', linkName: 'trellis.v4' });
      });

      it('auto, a family without a VXLAN device: any connected subnet is direct (the only way there)', () => {
        const p = plan({ mode: 'auto', overlay: overlay.filter((d) => d.family === 6) });
        expect(paths(p)).toEqual([
          'node-b v4 direct',
          'node-b v6 vxlan',
          'node-c v4 direct',
          'node-c v6 vxlan',
        ]);
        expect(p.decisions[2]).toMatchObject({ nodeIP: '192.168.20.2', linkName: 'eth1' });
      });

      it('auto, the peer without a VTEP MAC: unreachable, saying why it was not routed directly', () => {
        const p = desiredRoutes(loopbackIp, [loopbackIp, { ...near, vtepMacs: {} }], [lo, ...withLeg], {
          mode: 'auto',
          overlay,
        });
        expect(p.problems.map((x) => x.problem)).toEqual([
          "unreachable: this node's IPv4 InternalIP 10.9.9.9 is on no connected subnet, so every node tunnels to it (and it to them); VXLAN: the node has not published an IPv4 VTEP MAC",
          "unreachable: this node's IPv6 InternalIP fd00:99::9 is on no connected subnet, so every node tunnels to it (and it to them); VXLAN: the node has not published an IPv6 VTEP MAC",
        ]);
      });

      it('host-gw: any connected subnet is direct', () => {
        expect(paths(plan({ mode: 'host-gw' }))).toEqual([
          'node-b v4 direct',
          'node-b v6 direct',
          'node-c v4 direct',
          'node-c v6 direct',
        ]);
      });
    });
  });

  describe('nested subnets: the longest prefix decides, as in the kernel', () => {
    // node-a's InternalIP 10.0.0.5 is on eth0's 10.0.0.0/16; eth1 holds 10.0.1.5/24 inside it (IPv6 alike).
    const wide: PeerNode = { ...self, internalIPs: ['10.0.0.5', 'fd00:a::5'] };
    const nested: LocalLink[] = [
      {
        ifindex: 2,
        name: 'eth0',
        addresses: [
          { family: 4, address: '10.0.0.5', prefixLen: 16 },
          { family: 6, address: 'fd00:a::5', prefixLen: 48 },
        ],
      },
      {
        ifindex: 3,
        name: 'eth1',
        addresses: [
          { family: 4, address: '10.0.1.5', prefixLen: 24 },
          { family: 6, address: 'fd00:a:0:1::5', prefixLen: 64 },
        ],
      },
      ...links.slice(1),
    ];
    const peer = (name: string, ips: string[], n: number): PeerNode => ({
      name,
      podCIDRs: [`10.244.${n}.0/24`, `fd00:244:${n}::/64`],
      internalIPs: ips,
      vtepMacs: macs(name),
    });
    /** On eth1's /24 (which does not hold 10.0.0.5): it tunnels to us, so we tunnel to it. */
    const onLeg = peer('node-b', ['10.0.1.7', 'fd00:a:0:1::7'], 2);
    /** Only on eth0's /16. */
    const onHome = peer('node-c', ['10.0.2.7', 'fd00:a:0:2::7'], 3);

    it('auto: a peer whose longest match is a leg inside our subnet goes through VXLAN, the rest of it direct', () => {
      const p = desiredRoutes(wide, [wide, onLeg, onHome], nested, { mode: 'auto', overlay });
      expect(paths(p)).toEqual([
        'node-b v4 vxlan',
        'node-b v6 vxlan',
        'node-c v4 direct',
        'node-c v6 direct',
      ]);
      expect(p.decisions[2]).toMatchObject({ nodeIP: '10.0.2.7', linkName: 'eth0' });
      expect(p.decisions[3]).toMatchObject({ nodeIP: 'fd00:a:0:2::7', linkName: 'eth0' });
      expect(p.problems).toEqual([]);
    });

    it('auto, without VXLAN devices: unreachable, naming the subnet that won', () => {
      const p = desiredRoutes(wide, [wide, onLeg], nested, { mode: 'auto', overlay: [] });
      expect(p.problems.map((x) => x.problem)[0]).toBe(
        "unreachable: InternalIP 10.0.1.7 is on eth1's subnet 10.0.1.0/24 (its longest match here), which does not hold this node's InternalIP (the node would route back through VXLAN); VXLAN: this node has no IPv4 VXLAN device",
      );
    });

    it('auto: our InternalIP on the longer prefix: both subnets hold it, so peers on either are direct', () => {
      // Ours now 10.0.1.5 on eth1's /24, also inside eth0's /16: a peer only on the /16 finds ours on its
      // /16 and routes to us directly, so we route to it directly too (over eth0).
      const narrow: PeerNode = { ...self, internalIPs: ['10.0.1.5', 'fd00:a:0:1::5'] };
      const p = desiredRoutes(narrow, [narrow, onLeg, onHome], nested, { mode: 'auto', overlay });
      expect(paths(p)).toEqual([
        'node-b v4 direct',
        'node-b v6 direct',
        'node-c v4 direct',
        'node-c v6 direct',
      ]);
      expect(p.decisions[0]).toMatchObject({ nodeIP: '10.0.1.7', linkName: 'eth1' });
      expect(p.decisions[2]).toMatchObject({ nodeIP: '10.0.2.7', linkName: 'eth0' });
    });

    it('auto: a later InternalIP of the peer on our subnet is used when the first one is not (API order)', () => {
      const twoIps = peer('node-b', ['10.0.1.7', '10.0.2.8', 'fd00:a:0:1::7'], 2);
      const p = desiredRoutes(wide, [wide, twoIps], nested, { mode: 'auto', overlay });
      expect(p.decisions[0]).toMatchObject({ path: 'direct', nodeIP: '10.0.2.8', linkName: 'eth0' });
      expect(p.decisions[1]).toMatchObject({ path: 'vxlan' });
    });

    it('host-gw: the longest match, whatever holds our InternalIP', () => {
      const p = desiredRoutes(wide, [wide, onLeg, onHome], nested, { mode: 'host-gw' });
      expect(paths(p)).toEqual([
        'node-b v4 direct',
        'node-b v6 direct',
        'node-c v4 direct',
        'node-c v6 direct',
      ]);
      expect(p.decisions[0]).toMatchObject({ nodeIP: '10.0.1.7', linkName: 'eth1' });
    });
  });

  describe("prefix lengths: a node cannot see its peer's, so the pair agrees only when both are the same", () => {
    // Two nodes on one L2, 10.0.0.5 and 10.0.1.7: each plans from its own view of the subnet.
    const nodeA: PeerNode = { ...self, internalIPs: ['10.0.0.5'], podCIDRs: ['10.244.1.0/24'] };
    const nodeB: PeerNode = {
      name: 'node-b',
      internalIPs: ['10.0.1.7'],
      podCIDRs: ['10.244.2.0/24'],
      vtepMacs: macs('node-b'),
    };
    const aTo = (prefixLen: number) =>
      desiredRoutes(
        nodeA,
        [nodeA, nodeB],
        [{ ifindex: 2, name: 'eth0', addresses: [{ family: 4, address: '10.0.0.5', prefixLen }] }],
        { mode: 'auto', overlay },
      ).decisions[0]?.path;
    const bTo = (prefixLen: number) =>
      desiredRoutes(
        { ...nodeB, vtepMacs: {} },
        [{ ...nodeA, vtepMacs: macs('node-a') }, nodeB],
        [{ ifindex: 2, name: 'eth0', addresses: [{ family: 4, address: '10.0.1.7', prefixLen }] }],
        { mode: 'auto', overlay },
      ).decisions[0]?.path;

    it('both /16: direct both ways; both /24: VXLAN both ways', () => {
      expect([aTo(16), bTo(16)]).toEqual(['direct', 'direct']);
      expect([aTo(24), bTo(24)]).toEqual(['vxlan', 'vxlan']);
    });

    it('/16 on one, /24 on the other: the paths differ (documented; the planner cannot see it)', () => {
      expect([aTo(16), bTo(24)]).toEqual(['direct', 'vxlan']);
    });
  });

  describe('two nodes sharing two subnets, their InternalIPs listed in different orders', () => {
    // Both nodes on 10.0.0.0/24 (eth0) and 192.168.1.0/24 (eth1), each Node listing the other leg first.
    const legs = (a: string, b: string): LocalLink[] => [
      { ifindex: 2, name: 'eth0', addresses: [{ family: 4, address: a, prefixLen: 24 }] },
      { ifindex: 3, name: 'eth1', addresses: [{ family: 4, address: b, prefixLen: 24 }] },
    ];
    const nodeA: PeerNode = {
      name: 'node-a',
      internalIPs: ['10.0.0.5', '192.168.1.5'],
      podCIDRs: ['10.244.1.0/24'],
      vtepMacs: macs('node-a'),
    };
    const nodeB: PeerNode = {
      name: 'node-b',
      internalIPs: ['192.168.1.7', '10.0.0.7'],
      podCIDRs: ['10.244.2.0/24'],
      vtepMacs: macs('node-b'),
    };

    it('auto: both take the leg on the lower subnet (a leg each way is as asymmetric as a tunnel)', () => {
      const fromA = desiredRoutes(nodeA, [nodeA, nodeB], legs('10.0.0.5', '192.168.1.5'), {
        mode: 'auto',
        overlay,
      });
      const fromB = desiredRoutes(nodeB, [nodeA, nodeB], legs('10.0.0.7', '192.168.1.7'), {
        mode: 'auto',
        overlay,
      });
      expect(fromA.decisions[0]).toMatchObject({ path: 'direct', nodeIP: '10.0.0.7', linkName: 'eth0' });
      expect(fromB.decisions[0]).toMatchObject({ path: 'direct', nodeIP: '10.0.0.5', linkName: 'eth0' });
    });

    it("host-gw: the first of the peer's InternalIPs in the API's order, as documented", () => {
      const fromA = desiredRoutes(nodeA, [nodeA, nodeB], legs('10.0.0.5', '192.168.1.5'), {
        mode: 'host-gw',
      });
      expect(fromA.decisions[0]).toMatchObject({ path: 'direct', nodeIP: '192.168.1.7', linkName: 'eth1' });
    });
  });

  it('host-gw: the node behind the router is unreachable (reported), no VXLAN route even with devices', () => {
    const p = plan('host-gw', [near, far]);
    expect(paths(p)).toEqual([
      'node-b v4 direct',
      'node-b v6 direct',
      'node-c v4 unreachable',
      'node-c v6 unreachable',
    ]);
    expect(p.problems.map((x) => x.problem)).toEqual([
      'unreachable with host-gw: InternalIP 192.168.20.2 is not on a subnet connected to this node',
      'unreachable with host-gw: InternalIP fd00:20::2 is not on a subnet connected to this node',
    ]);
    expect(p.routes.some((r) => r.onlink === true)).toBe(false);
  });

  it('vxlan: every node goes through the tunnel, even one on our subnet', () => {
    const p = plan('vxlan', [near, far]);
    expect(paths(p)).toEqual(['node-b v4 vxlan', 'node-b v6 vxlan', 'node-c v4 vxlan', 'node-c v6 vxlan']);
    expect(p.routes.filter((r) => r.type === 'unicast').every((r) => r.onlink === true)).toBe(true);
    expect(p.decisions[0]).toMatchObject({ nodeIP: '192.168.10.3', vtepIP: '10.244.2.0' });
  });

  it('auto without a published MAC or without our device: unreachable with both reasons, no route', () => {
    const noMac = { ...far, vtepMacs: { 6: vtepMac('node-c', 6) } };
    const p = plan('auto', [noMac], [overlay[0]!]);
    expect(paths(p)).toEqual(['node-c v4 unreachable', 'node-c v6 unreachable']);
    expect(p.problems.map((x) => x.problem)).toEqual([
      'unreachable: InternalIP 192.168.20.2 is not on a subnet connected to this node; VXLAN: the node has not published an IPv4 VTEP MAC',
      'unreachable: InternalIP fd00:20::2 is not on a subnet connected to this node; VXLAN: this node has no IPv6 VXLAN device',
    ]);
    expect(p.routes.filter((r) => r.type === 'unicast')).toEqual([]);
  });

  it('never tunnels to a node claiming our own address as its InternalIP', () => {
    const clash: PeerNode = { ...far, internalIPs: ['192.168.10.2'], podCIDRs: ['10.244.3.0/24'] };
    const p = plan('vxlan', [clash]);
    expect(paths(p)).toEqual(['node-c v4 unreachable']);
    expect(p.problems[0]!.problem).toMatch(/VXLAN: no IPv4 InternalIP that is not one of this node's own/);
  });

  it("uses the peer's first non-own InternalIP of the family for the FDB", () => {
    const two: PeerNode = {
      ...far,
      internalIPs: ['192.168.10.2', '192.168.20.9'],
      podCIDRs: ['10.244.3.0/24'],
    };
    expect(plan('vxlan', [two]).decisions[0]).toMatchObject({ path: 'vxlan', nodeIP: '192.168.20.9' });
  });

  it('host-gw output is unchanged by overlay devices being passed (identical to no overlay)', () => {
    const a = desiredRoutes(self, [self, near, far], links, { mode: 'host-gw' });
    const b = desiredRoutes(self, [self, near, far], links, { mode: 'host-gw', overlay });
    expect(b).toEqual(a);
  });

  it('rejects an unknown mode', () => {
    expect(() => desiredRoutes(self, [], links, { mode: 'ipip' as RoutingMode })).toThrow(
      /unsupported routing mode/,
    );
  });
});

describe('vtepAddress (flannel scheme)', () => {
  it('is the network address of the first pod CIDR of the family, in CIDR order', () => {
    expect(vtepAddress(['10.244.3.0/24', 'fd00:244:3::/64'], 4)).toBe('10.244.3.0');
    expect(vtepAddress(['10.244.3.0/24', 'fd00:244:3::/64'], 6)).toBe('fd00:244:3::');
    expect(vtepAddress(['10.245.0.0/24', '10.244.9.0/24'], 4)).toBe('10.244.9.0');
    expect(vtepAddress(['10.244.3.0/24'], 6)).toBeUndefined();
    expect(vtepAddress(['bogus'], 4)).toBeUndefined();
  });
});

describe('route diff with VXLAN routes', () => {
  it('owns onlink routes via the VXLAN device (protocol 126 + gateway) and replaces direct <-> vxlan in place', () => {
    const tunnel = plan('vxlan', [near]).routes;
    const direct = plan('auto', [near]).routes;
    for (const r of tunnel) expect(isOwnedRoute(r)).toBe(true);
    // A node moving from our subnet to another: the same keys, so replaces, never a gap.
    const d = diffRoutes(tunnel, direct);
    expect(d).toMatchObject({ add: [], remove: [], conflicts: [] });
    expect(d.replace.map((r) => `${r.dst} via ${r.gateway} onlink ${r.onlink === true}`)).toEqual([
      '10.244.2.0/24 via 10.244.2.0 onlink true',
      'fd00:244:2::/64 via fd00:244:2:: onlink true',
    ]);
    // Programmed exactly as desired: nothing to do (the kernel reports onlink back).
    expect(diffRoutes(tunnel, tunnel)).toMatchObject({
      add: [],
      replace: [],
      remove: [],
      unchanged: tunnel.length,
    });
  });
});
