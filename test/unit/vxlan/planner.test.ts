import { describe, expect, it } from 'vitest';
import { TRELLIS_ROUTE_PROTOCOL } from '../../../pkg/datapath/ports.ts';
import { desiredRoutes, ownDirectSubnets, vtepAddress } from '../../../pkg/routes/desired.ts';
import { diffRoutes, isOwnedRoute } from '../../../pkg/routes/diff.ts';
import type { LocalLink, OverlayDevice, PeerNode, RoutingMode } from '../../../pkg/routes/types.ts';
import { vtepMacsFromAnnotations } from '../../../pkg/vxlan/annotations.ts';
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

  it('vxlan without our own device of a family: peers on our subnet routed directly in it, as they route to us (we publish no MAC)', () => {
    // No IPv6 device (the underlay's MTU too low for IPv6): we publish no IPv6 VTEP MAC, so node-b,
    // in vxlan mode too, routes IPv6 to us directly; node-c, behind the router, cannot.
    const p = plan('vxlan', [near, far], [overlay[0]!]);
    expect(paths(p)).toEqual([
      'node-b v4 vxlan',
      'node-b v6 direct',
      'node-c v4 vxlan',
      'node-c v6 unreachable',
    ]);
    expect(p.decisions[1]).toMatchObject({ nodeIP: 'fd00:10::3', linkName: 'eth0' });
    expect(p.problems).toEqual([
      {
        node: 'node-c',
        problem:
          'unreachable: VXLAN: this node has no IPv6 VXLAN device; InternalIP fd00:20::2 is not on a subnet connected to this node',
      },
    ]);
    // What node-b plans for us: we published no IPv6 MAC, so it routes to us directly too.
    const fromB = desiredRoutes(
      near,
      [{ ...self, vtepMacs: { 4: vtepMac('node-a', 4) } }, near],
      [
        {
          ifindex: 2,
          name: 'eth0',
          addresses: links[0]!.addresses.map((a) => ({
            ...a,
            address: a.family === 4 ? '192.168.10.3' : 'fd00:10::3',
          })),
        },
      ],
      { mode: 'vxlan', overlay },
    );
    expect(paths(fromB)).toEqual(['node-a v4 vxlan', 'node-a v6 direct']);
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

  describe('prefix lengths: each node publishes the subnets it routes directly on, so the pair agrees', () => {
    // Two nodes on one L2, 10.0.0.5 and 10.0.1.7: each plans from its own view of the subnet and the
    // subnets the other published (ownDirectSubnets, read back as the Node annotations would carry it).
    const nodeA: PeerNode = {
      ...self,
      internalIPs: ['10.0.0.5'],
      podCIDRs: ['10.244.1.0/24'],
      vtepMacs: macs('node-a'),
    };
    const nodeB: PeerNode = {
      name: 'node-b',
      internalIPs: ['10.0.1.7'],
      podCIDRs: ['10.244.2.0/24'],
      vtepMacs: macs('node-b'),
    };
    const eth0 = (address: string, prefixLen: number): LocalLink[] => [
      { ifindex: 2, name: 'eth0', addresses: [{ family: 4, address, prefixLen }] },
    ];
    /** Each node's path to the other; `published` false: the peer's agent publishes nothing (older). */
    const paths2 = (aLen: number, bLen: number, published = true) => {
      const aLinks = eth0('10.0.0.5', aLen);
      const bLinks = eth0('10.0.1.7', bLen);
      const withSubnets = (n: PeerNode, l: LocalLink[]): PeerNode =>
        published ? { ...n, directSubnets: ownDirectSubnets(n, l, { mode: 'auto', overlay }) } : n;
      const a = desiredRoutes(nodeA, [nodeA, withSubnets(nodeB, bLinks)], aLinks, { mode: 'auto', overlay });
      const b = desiredRoutes(nodeB, [withSubnets(nodeA, aLinks), nodeB], bLinks, { mode: 'auto', overlay });
      return [a.decisions[0]?.path, b.decisions[0]?.path];
    };

    it('both /16: direct both ways; both /24: VXLAN both ways', () => {
      expect(paths2(16, 16)).toEqual(['direct', 'direct']);
      expect(paths2(24, 24)).toEqual(['vxlan', 'vxlan']);
    });

    it('/16 on one, /24 on the other: VXLAN both ways, the /16 node saying why', () => {
      expect(paths2(16, 24)).toEqual(['vxlan', 'vxlan']);
      expect(paths2(24, 16)).toEqual(['vxlan', 'vxlan']);
      const a = desiredRoutes(
        { ...nodeA, vtepMacs: {} },
        [{ ...nodeB, vtepMacs: {}, directSubnets: { 4: '10.0.1.0/24' } }],
        eth0('10.0.0.5', 16),
        { mode: 'auto', overlay },
      );
      expect(a.problems.map((x) => x.problem)).toEqual([
        "unreachable: the node routes directly only on 10.0.1.0/24 (its trellis.dev/direct-subnets-v4), which does not hold this node's InternalIP (it would route back through VXLAN); VXLAN: the node has not published an IPv4 VTEP MAC",
      ]);
    });

    it('a rolling change between auto and vxlan: the auto node tunnels to the vxlan one, as it tunnels back', () => {
      const bLinks = eth0('10.0.1.7', 16);
      const vxlanB = { ...nodeB, directSubnets: ownDirectSubnets(nodeB, bLinks, { mode: 'vxlan', overlay }) };
      const a = desiredRoutes(nodeA, [vxlanB], eth0('10.0.0.5', 16), { mode: 'auto', overlay });
      const b = desiredRoutes(nodeB, [nodeA], bLinks, { mode: 'vxlan', overlay });
      expect([a.decisions[0]?.path, b.decisions[0]?.path]).toEqual(['vxlan', 'vxlan']);
      // Without a VXLAN device here the vxlan node, seeing no VTEP of ours, routes to us directly: so do we.
      const noTunnel = desiredRoutes({ ...nodeA, vtepMacs: {} }, [vxlanB], eth0('10.0.0.5', 16), {
        mode: 'auto',
        overlay: [],
      });
      expect(noTunnel.decisions[0]?.path).toBe('direct');
      expect(
        desiredRoutes(nodeB, [{ ...nodeA, vtepMacs: {} }], bLinks, { mode: 'vxlan', overlay }).decisions[0]
          ?.path,
      ).toBe('direct');
    });

    it('explain: a tunnelled peer on our subnet says why; one behind a router needs no word', () => {
      const narrowB = { ...nodeB, directSubnets: { 4: '10.0.1.0/24' } };
      const behindRouter = {
        ...nodeB,
        name: 'node-c',
        internalIPs: ['10.9.0.1'],
        podCIDRs: ['10.244.3.0/24'],
      };
      const p = desiredRoutes(nodeA, [narrowB, behindRouter], eth0('10.0.0.5', 16), {
        mode: 'auto',
        overlay,
        explain: true,
      });
      expect(p.decisions.map((d) => [d.node, d.path, 'why' in d ? d.why : undefined])).toEqual([
        [
          'node-b',
          'vxlan',
          "the node routes directly only on 10.0.1.0/24 (its trellis.dev/direct-subnets-v4), which does not hold this node's InternalIP (it would route back through VXLAN)",
        ],
        ['node-c', 'vxlan', undefined],
      ]);
      // Without explain (the agent's own passes), no decision keeps the text.
      const quiet = desiredRoutes(nodeA, [narrowB], eth0('10.0.0.5', 16), { mode: 'auto', overlay });
      expect(quiet.decisions[0]).not.toHaveProperty('why');
    });

    it('a peer that publishes nothing (an older agent) or no valid subnet: only our own view decides', () => {
      expect(paths2(16, 24, false)).toEqual(['direct', 'vxlan']);
      for (const text of ['10.0.1.0/33', 'fd00::/64', 'x']) {
        const a = desiredRoutes(nodeA, [{ ...nodeB, directSubnets: { 4: text } }], eth0('10.0.0.5', 16), {
          mode: 'auto',
          overlay,
        });
        expect(a.decisions[0]?.path, text).toBe('direct');
        expect(a.problems, text).toEqual([
          {
            node: 'node-b',
            problem: `trellis.dev/direct-subnets-v4 "${text}": "${text}" is not an IPv4 network; ignored`,
          },
        ]);
      }
    });

    it('a published list with bad entries: the valid ones decide the path, the bad ones are reported', () => {
      const plan = (text: string) =>
        desiredRoutes(nodeA, [{ ...nodeB, directSubnets: { 4: text } }], eth0('10.0.0.5', 16), {
          mode: 'auto',
          overlay,
        });
      // 10.0.1.0/24 does not hold our 10.0.0.5: node-b tunnels to us, bad entry or not, so we tunnel too.
      for (const text of ['10.0.1.0/24,bogus', '10.0.1.0/24,', 'bogus, 10.0.1.0/24,fd00::/64']) {
        const a = plan(text);
        expect(a.decisions[0]?.path, text).toBe('vxlan');
        expect(
          a.problems.map((p) => [p.node, p.problem]),
          text,
        ).toEqual([
          [
            'node-b',
            expect.stringMatching(
              /^trellis\.dev\/direct-subnets-v4 ".*": .* not (an )?IPv4 networks?; ignored$/,
            ),
          ],
        ]);
      }
      expect(plan('bogus, 10.0.1.0/24,fd00::/64').problems[0]?.problem).toBe(
        'trellis.dev/direct-subnets-v4 "bogus, 10.0.1.0/24,fd00::/64": "bogus", "fd00::/64" are not IPv4 networks; ignored',
      );
      // A valid part that holds our address keeps the direct route.
      const direct = plan('10.0.0.0/16,bogus');
      expect(direct.decisions[0]?.path).toBe('direct');
      expect(direct.problems.map((p) => p.problem)).toEqual([
        'trellis.dev/direct-subnets-v4 "10.0.0.0/16,bogus": "bogus" is not an IPv4 network; ignored',
      ]);
    });

    it('a peer with its InternalIP on lo, inside our subnet, publishes no subnet: we tunnel, as it does', () => {
      const onLo: PeerNode = { ...nodeB, internalIPs: ['10.0.9.9'] };
      const loLinks: LocalLink[] = [
        { ifindex: 1, name: 'lo', addresses: [{ family: 4, address: '10.0.9.9', prefixLen: 32 }] },
        ...eth0('10.0.1.7', 24),
      ];
      expect(ownDirectSubnets(onLo, loLinks, { mode: 'auto', overlay })).toEqual({ 4: '' });
      const a = desiredRoutes(
        nodeA,
        [{ ...onLo, directSubnets: ownDirectSubnets(onLo, loLinks, { mode: 'auto', overlay }) }],
        eth0('10.0.0.5', 16),
        { mode: 'auto', overlay },
      );
      expect(a.decisions[0]?.path).toBe('vxlan');
      expect(
        desiredRoutes(nodeA, [onLo], eth0('10.0.0.5', 16), { mode: 'auto', overlay }).decisions[0]?.path,
      ).toBe('direct');
    });

    it('ownDirectSubnets: auto only, per family, the subnets holding our InternalIP; none where any subnet is direct', () => {
      expect(ownDirectSubnets(self, links, { mode: 'auto', overlay })).toEqual({
        4: '192.168.10.0/24',
        6: 'fd00:10::/64',
      });
      // Two addresses on one subnet, and a wider one also holding the InternalIP: each network once, in order.
      const more: LocalLink[] = [
        {
          ifindex: 2,
          name: 'eth0',
          addresses: [
            { family: 4, address: '192.168.10.2', prefixLen: 24 },
            { family: 4, address: '192.168.10.9', prefixLen: 24 },
          ],
        },
        { ifindex: 3, name: 'eth1', addresses: [{ family: 4, address: '192.168.11.1', prefixLen: 16 }] },
      ];
      expect(ownDirectSubnets(self, more, { mode: 'auto', overlay })).toEqual({
        4: '192.168.0.0/16,192.168.10.0/24',
        6: '', // our IPv6 InternalIP is on none of these links
      });
      expect(ownDirectSubnets(self, links, { mode: 'host-gw' })).toEqual({});
      // vxlan mode tunnels to every peer that has a VTEP: no subnet, per family with a device.
      expect(ownDirectSubnets(self, links, { mode: 'vxlan', overlay })).toEqual({ 4: '', 6: '' });
      expect(ownDirectSubnets(self, links, { mode: 'vxlan', overlay: overlay.slice(0, 1) })).toEqual({
        4: '',
      });
      // On no connected subnet and no VXLAN device of the family: direct over any subnet, so nothing.
      const onLo: PeerNode = { ...self, internalIPs: ['10.9.9.9'] };
      expect(ownDirectSubnets(onLo, links, { mode: 'auto', overlay: [] })).toEqual({});
      expect(ownDirectSubnets(onLo, links, { mode: 'auto', overlay })).toEqual({ 4: '' });
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

  it('a malformed VTEP MAC annotation: reported as malformed, with its value, not as none published', () => {
    const bad = {
      ...far,
      vtepMacs: vtepMacsFromAnnotations({
        'trellis.dev/vtep-mac-v4': 'zz:zz',
        'trellis.dev/vtep-mac-v6': 'AA:00:00:00:00:01',
      }),
    };
    const p = plan('auto', [bad]);
    expect(paths(p)).toEqual(['node-c v4 unreachable', 'node-c v6 vxlan']);
    expect(p.problems).toEqual([
      {
        node: 'node-c',
        problem:
          'unreachable: InternalIP 192.168.20.2 is not on a subnet connected to this node; VXLAN: its trellis.dev/vtep-mac-v4 "zz:zz" is not a usable VTEP MAC',
      },
    ]);
    expect(p.decisions[1]).toMatchObject({ path: 'vxlan', vtepMac: 'aa:00:00:00:00:01' });
    // A multicast MAC is as unusable as a malformed one.
    expect(plan('auto', [{ ...far, vtepMacs: { 4: '01:00:5e:00:00:01' } }]).problems[0]?.problem).toMatch(
      /its trellis\.dev\/vtep-mac-v4 "01:00:5e:00:00:01" is not a usable VTEP MAC/,
    );
  });

  it('vxlan: a peer on our subnet with a malformed VTEP MAC is routed directly, as one without, and reported', () => {
    const p = plan('vxlan', [{ ...near, vtepMacs: { 4: 'zz:zz' } }]);
    expect(paths(p)).toEqual(['node-b v4 direct', 'node-b v6 direct']);
    expect(p.problems).toEqual([
      {
        node: 'node-b',
        problem:
          'its trellis.dev/vtep-mac-v4 "zz:zz" is not a usable VTEP MAC; routed directly, as a node that published none',
        routed: true,
      },
    ]);
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
