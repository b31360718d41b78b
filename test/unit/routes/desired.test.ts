import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TRELLIS_ROUTE_PROTOCOL } from '../../../pkg/datapath/ports.ts';
import { cidrsOverlap, parseCidr } from '../../../pkg/ip/index.ts';
import { desiredRoutes } from '../../../pkg/routes/desired.ts';
import type { LocalLink, PeerNode } from '../../../pkg/routes/types.ts';

const self: PeerNode = {
  name: 'node-a',
  podCIDRs: ['10.244.0.0/24', 'fd00:10:244::/64'],
  internalIPs: ['192.168.1.10', 'fd00:1::10'],
};
const links: LocalLink[] = [
  {
    ifindex: 1,
    name: 'lo',
    addresses: [
      { family: 4, address: '127.0.0.1', prefixLen: 8 },
      { family: 6, address: '::1', prefixLen: 128 },
    ],
  },
  {
    ifindex: 2,
    name: 'eth0',
    addresses: [
      { family: 4, address: '192.168.1.10', prefixLen: 24 },
      { family: 6, address: 'fd00:1::10', prefixLen: 64 },
      { family: 6, address: 'fe80::1', prefixLen: 64 },
    ],
  },
  { ifindex: 3, name: 'eth1', addresses: [{ family: 4, address: '172.16.0.10', prefixLen: 16 }] },
];
const opts = { mode: 'host-gw' as const };

function peer(name: string, podCIDRs: string[], internalIPs: string[]): PeerNode {
  return { name, podCIDRs, internalIPs };
}

describe('desiredRoutes (host-gw)', () => {
  it('routes each peer pod CIDR via its InternalIP on the connected interface, blackholes our own', () => {
    const out = desiredRoutes(
      self,
      [
        self,
        peer('node-b', ['10.244.1.0/24', 'fd00:10:244:1::/64'], ['192.168.1.11', 'fd00:1::11']),
        peer('node-c', ['10.244.2.0/24'], ['172.16.5.5']),
      ],
      links,
      opts,
    );
    expect(out.problems).toEqual([]);
    expect(out.routes).toEqual([
      {
        family: 4,
        dst: '10.244.0.0/24',
        protocol: TRELLIS_ROUTE_PROTOCOL,
        scope: 'universe',
        type: 'blackhole',
      },
      {
        family: 4,
        dst: '10.244.1.0/24',
        gateway: '192.168.1.11',
        ifindex: 2,
        protocol: 126,
        scope: 'universe',
        type: 'unicast',
      },
      {
        family: 4,
        dst: '10.244.2.0/24',
        gateway: '172.16.5.5',
        ifindex: 3,
        protocol: 126,
        scope: 'universe',
        type: 'unicast',
      },
      { family: 6, dst: 'fd00:10:244::/64', protocol: 126, scope: 'universe', type: 'blackhole' },
      {
        family: 6,
        dst: 'fd00:10:244:1::/64',
        gateway: 'fd00:1::11',
        ifindex: 2,
        protocol: 126,
        scope: 'universe',
        type: 'unicast',
      },
    ]);
    expect(out.decisions.map((d) => [d.node, d.family, d.path])).toEqual([
      ['node-b', 4, 'direct'],
      ['node-b', 6, 'direct'],
      ['node-c', 4, 'direct'],
    ]);
  });

  it('a node without an InternalIP of a family routes none of that family to peers: they could not route back', () => {
    const v4Only = { ...self, internalIPs: ['192.168.1.10'] };
    const b = peer('node-b', ['10.244.1.0/24', 'fd00:10:244:1::/64'], ['192.168.1.11', 'fd00:1::11']);
    const out = desiredRoutes(v4Only, [b], links, opts);
    expect(out.routes.filter((r) => r.type !== 'blackhole').map((r) => r.dst)).toEqual(['10.244.1.0/24']);
    expect(out.problems).toEqual([
      {
        node: 'node-a',
        problem:
          'this node has no usable IPv6 InternalIP, so no peer routes IPv6 back to its pods: IPv6 routes to peers skipped',
      },
    ]);
    // A link-local one is no better (peers refuse it); no InternalIP at all is standalone: no peers to judge.
    const linkLocal = desiredRoutes({ ...self, internalIPs: ['192.168.1.10', 'fe80::1'] }, [b], links, opts);
    expect(linkLocal.routes.some((r) => r.family === 6 && r.type !== 'blackhole')).toBe(false);
  });

  it('prefers the longest matching subnet, then the lowest ifindex', () => {
    const l: LocalLink[] = [
      { ifindex: 7, name: 'wide', addresses: [{ family: 4, address: '10.0.0.1', prefixLen: 8 }] },
      { ifindex: 9, name: 'narrow-b', addresses: [{ family: 4, address: '10.1.0.2', prefixLen: 16 }] },
      { ifindex: 8, name: 'narrow-a', addresses: [{ family: 4, address: '10.1.0.1', prefixLen: 16 }] },
    ];
    const out = desiredRoutes(self, [peer('b', ['172.20.1.0/24'], ['10.1.2.3'])], l, opts);
    expect(out.routes.find((r) => r.gateway !== undefined)?.ifindex).toBe(8);
  });

  it('reports nodes not on a shared subnet as unreachable, without routes', () => {
    const out = desiredRoutes(self, [peer('far', ['10.244.9.0/24'], ['203.0.113.9'])], links, opts);
    expect(out.routes.filter((r) => r.type === 'unicast')).toEqual([]);
    expect(out.decisions).toEqual([
      {
        node: 'far',
        family: 4,
        path: 'unreachable',
        nodeIP: '203.0.113.9',
        podCIDRs: ['10.244.9.0/24'],
        reason: expect.stringContaining('not on a subnet'),
      },
    ]);
    expect(out.problems.map((p) => p.node)).toEqual(['far']);
  });

  it('uses the first InternalIP of the family that is reachable', () => {
    const out = desiredRoutes(
      self,
      [peer('b', ['10.244.1.0/24'], ['203.0.113.9', '192.168.1.12'])],
      links,
      opts,
    );
    expect(out.routes.find((r) => r.type === 'unicast')?.gateway).toBe('192.168.1.12');
  });

  it('routes nodes that claim one InternalIP as planned and reports each of them, naming the others', () => {
    const out = desiredRoutes(
      self,
      [
        peer('b', ['10.244.21.0/24'], ['192.168.1.30']),
        peer('c', ['10.244.22.0/24'], ['192.168.1.30']),
        peer('d', ['10.244.23.0/24'], ['192.168.1.30']),
        peer('e', ['10.244.24.0/24'], ['192.168.1.31']),
      ],
      links,
      opts,
    );
    // Which claim is right cannot be told: every route stays, each to the address claimed.
    expect(out.routes.filter((r) => r.type === 'unicast').map((r) => [r.dst, r.gateway])).toEqual([
      ['10.244.21.0/24', '192.168.1.30'],
      ['10.244.22.0/24', '192.168.1.30'],
      ['10.244.23.0/24', '192.168.1.30'],
      ['10.244.24.0/24', '192.168.1.31'],
    ]);
    const say = (others: string) =>
      `InternalIP 192.168.1.30 is also ${others}'s: traffic to the pods of each goes to whichever machine holds that address`;
    expect(out.problems).toEqual([
      { node: 'b', problem: say('node c and node d'), routed: true },
      { node: 'c', problem: say('node b and node d'), routed: true },
      { node: 'd', problem: say('node b and node c'), routed: true },
    ]);
    // A leftover Node without a pod CIDR routes nowhere: no claim, only its own skip.
    const leftover = desiredRoutes(
      self,
      [peer('b', ['10.244.21.0/24'], ['192.168.1.30']), peer('old-b', [], ['192.168.1.30'])],
      links,
      opts,
    );
    expect(leftover.problems).toEqual([{ node: 'old-b', problem: 'no valid pod CIDR; skipped' }]);
  });

  it('skips and reports bad nodes without failing the others', () => {
    const out = desiredRoutes(
      self,
      [
        peer('no-ip', ['10.244.3.0/24'], []),
        peer('no-cidr', [], ['192.168.1.13']),
        peer('v6-only-ip', ['10.244.4.0/24'], ['fd00:1::14']),
        peer('bad-text', ['10.244.5.0/33', 'banana'], ['192.168.1.300']),
        peer('overlaps-us', ['10.244.0.128/25'], ['192.168.1.15']),
        peer('x1', ['10.244.6.0/24'], ['192.168.1.16']),
        peer('x2', ['10.244.6.0/23'], ['192.168.1.17']),
        peer('host-bits', ['10.244.7.1/24'], ['192.168.1.18']),
        peer('loopback-ip', ['10.244.8.0/24'], ['127.0.0.1']),
        peer('claims-our-ip', ['10.244.10.0/24'], ['192.168.1.10']),
        peer('dup', ['10.244.11.0/24'], ['192.168.1.19']),
        peer('dup', ['10.244.12.0/24'], ['192.168.1.20']),
        peer('good', ['10.244.13.0/24'], ['192.168.1.21']),
      ],
      links,
      opts,
    );
    // x2's /23 holds x1's /24: x2 goes, x1 keeps its route.
    expect(out.routes.filter((r) => r.type === 'unicast').map((r) => r.dst)).toEqual([
      '10.244.6.0/24',
      '10.244.13.0/24',
    ]);
    const byNode = new Map<string, string[]>();
    for (const p of out.problems) byNode.set(p.node, [...(byNode.get(p.node) ?? []), p.problem]);
    expect([...byNode.keys()].sort()).toEqual(
      [
        'bad-text',
        'claims-our-ip',
        'dup',
        'host-bits',
        'loopback-ip',
        'no-cidr',
        'no-ip',
        'node-a',
        'overlaps-us',
        'v6-only-ip',
        'x2',
      ].sort(),
    );
    // A peer claiming this node's InternalIP: said on both sides; only this node is routed all the same
    // (the peer is unreachable, its own reason first).
    const shares = out.problems.filter((p) => p.problem.startsWith('InternalIP 192.168.1.10 is also'));
    expect(shares).toEqual([
      {
        node: 'claims-our-ip',
        problem:
          "InternalIP 192.168.1.10 is also this node's: traffic to the pods of each goes to whichever machine holds that address",
      },
      {
        node: 'node-a',
        problem:
          "InternalIP 192.168.1.10 is also node claims-our-ip's: traffic to the pods of each goes to whichever machine holds that address",
        routed: true,
      },
    ]);
    expect(byNode.get('claims-our-ip')![0]).toMatch(/own addresses/);
    expect(byNode.get('overlaps-us')!.join()).toMatch(/overlaps this node's pod CIDR 10\.244\.0\.0\/24/);
    expect(byNode.get('x2')!.join()).toMatch(
      /pod CIDR 10\.244\.6\.0\/23 contains 10\.244\.6\.0\/24 of node x1; skipped \(the narrower keeps its route\)/,
    );
    expect(byNode.get('v6-only-ip')!.join()).toMatch(/no IPv4 InternalIP/);
    expect(byNode.get('claims-our-ip')!.join()).toMatch(/own addresses/);
    // The claims refused as such (masquerade leaves them out too); a node skipped whole refuses none.
    expect(
      out.problems.flatMap((p) => (p.refusedCidr === undefined ? [] : [[p.node, p.refusedCidr]])),
    ).toEqual([
      ['overlaps-us', '10.244.0.128/25'],
      ['x2', '10.244.6.0/23'],
    ]);
  });

  it("one Node with a CIDR over everyone else's loses its route alone; the same CIDR on two nodes goes on both", () => {
    const nodes = [1, 2, 3].map((i) => peer(`n${i}`, [`10.244.${i}.0/24`], [`192.168.1.${20 + i}`]));
    const wide = desiredRoutes(
      self,
      [...nodes, peer('wide', ['10.244.0.0/16'], ['192.168.1.30'])],
      links,
      opts,
    );
    // The /16 also overlaps this node's own /24, which is reason enough on its own.
    expect(wide.routes.filter((r) => r.type === 'unicast').map((r) => r.dst)).toEqual([
      '10.244.1.0/24',
      '10.244.2.0/24',
      '10.244.3.0/24',
    ]);
    expect(wide.problems.map((p) => p.node)).toEqual(['wide']);
    const twins = desiredRoutes(
      self,
      [...nodes, peer('twin', ['10.244.2.0/24'], ['192.168.1.31'])],
      links,
      opts,
    );
    expect(twins.routes.filter((r) => r.type === 'unicast').map((r) => r.dst)).toEqual([
      '10.244.1.0/24',
      '10.244.3.0/24',
    ]);
    expect(twins.problems.map((p) => [p.node, p.problem, p.refusedCidr])).toEqual([
      ['n2', "pod CIDR 10.244.2.0/24 is also node twin's; skipped on both", '10.244.2.0/24'],
      ['twin', "pod CIDR 10.244.2.0/24 is also node n2's; skipped on both", '10.244.2.0/24'],
    ]);
  });

  describe('a peer pod CIDR over the underlay', () => {
    // node-1's view: its eth0 is 10.100.0.101/24; node-2 sits behind a router, on 10.100.1.0/24.
    const node1: PeerNode = { name: 'node-1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.100.0.101'] };
    const node2 = peer('node-2', ['10.244.2.0/24'], ['10.100.1.7']);
    const ethLinks = (address: string): LocalLink[] => [
      { ifindex: 2, name: 'eth0', addresses: [{ family: 4, address, prefixLen: 24 }] },
    ];
    const peerRoutes = (out: ReturnType<typeof desiredRoutes>) =>
      out.routes.filter((r) => r.type === 'unicast').map((r) => `${r.dst} via ${r.gateway}`);

    it("skips one holding another node's InternalIP, on every agent alike (ph-hijack)", () => {
      const hijack = peer('ph-hijack', ['10.100.1.0/24'], ['10.100.0.124']);
      const want = {
        node: 'ph-hijack',
        problem: "pod CIDR 10.100.1.0/24 contains node node-2's InternalIP 10.100.1.7; skipped",
        refusedCidr: '10.100.1.0/24',
      };
      const out = desiredRoutes(node1, [node1, node2, hijack], ethLinks('10.100.0.101'), opts);
      expect(peerRoutes(out)).not.toContain('10.100.1.0/24 via 10.100.0.124');
      expect(out.problems).toContainEqual(want);
      // A third node, with no subnet near either, decides the same from the same Node objects.
      const node3: PeerNode = { name: 'node-3', podCIDRs: ['10.244.3.0/24'], internalIPs: ['10.100.0.3'] };
      const third = desiredRoutes(node3, [node1, node2, hijack], ethLinks('10.100.0.3'), opts);
      expect(third.problems).toContainEqual(want);
      expect(peerRoutes(third)).toEqual(['10.244.1.0/24 via 10.100.0.101']);
    });

    it("names whose InternalIP it holds: this node's, the peer's own, a node skipped for want of a pod CIDR", () => {
      const self9: PeerNode = { name: 'node-1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.9.9.9'] };
      const out = desiredRoutes(
        self9,
        [
          peer('over-us', ['10.9.9.0/24'], ['10.100.0.20']),
          peer('over-itself', ['10.50.0.0/16'], ['10.50.0.1']),
          peer('bare', [], ['10.60.0.5']),
          peer('over-bare', ['10.60.0.0/24'], ['10.100.0.21']),
          peer('fine', ['10.244.5.0/24'], ['10.100.0.22']),
        ],
        ethLinks('10.100.0.101'),
        opts,
      );
      expect(out.problems.filter((p) => p.problem.startsWith('pod CIDR'))).toEqual([
        {
          node: 'over-bare',
          problem: "pod CIDR 10.60.0.0/24 contains node bare's InternalIP 10.60.0.5; skipped",
          refusedCidr: '10.60.0.0/24',
        },
        {
          node: 'over-itself',
          problem: "pod CIDR 10.50.0.0/16 contains the node's own InternalIP 10.50.0.1; skipped",
          refusedCidr: '10.50.0.0/16',
        },
        {
          node: 'over-us',
          problem: "pod CIDR 10.9.9.0/24 contains this node's InternalIP 10.9.9.9; skipped",
          refusedCidr: '10.9.9.0/24',
        },
      ]);
      expect(peerRoutes(out)).toEqual(['10.244.5.0/24 via 10.100.0.22']);
    });

    it('skips one that holds a whole subnet connected to this node; one inside a connected subnet is routed', () => {
      const links = [
        {
          ifindex: 2,
          name: 'eth0',
          addresses: [
            { family: 4 as const, address: '10.100.0.101', prefixLen: 24 },
            { family: 6 as const, address: 'fd00:100::101', prefixLen: 64 },
          ],
        },
        // A leg no InternalIP is on.
        {
          ifindex: 3,
          name: 'eth1',
          addresses: [{ family: 4 as const, address: '172.16.5.10', prefixLen: 24 }],
        },
      ];
      const out = desiredRoutes(
        node1,
        [
          // The API server on a control-plane node: its InternalIP protects it (ph-cut).
          peer('cp', ['10.244.9.0/24'], ['10.100.0.2']),
          peer('ph-cut', ['10.100.0.0/30'], ['10.100.0.124']),
          peer('ph-wide', ['172.16.0.0/16'], ['10.100.0.125']),
          peer('v6-wide', ['fd00::/16'], ['fd00:100::126']),
          // Inside eth0's subnet and holding no node: the cluster gave that part of the segment to pods.
          peer('inside', ['10.100.0.128/28'], ['10.100.0.127']),
        ],
        links,
        opts,
      );
      expect(peerRoutes(out)).toEqual(['10.100.0.128/28 via 10.100.0.127', '10.244.9.0/24 via 10.100.0.2']);
      expect(out.problems.filter((p) => p.problem.startsWith('pod CIDR'))).toEqual([
        {
          node: 'ph-cut',
          problem: "pod CIDR 10.100.0.0/30 contains node cp's InternalIP 10.100.0.2; skipped",
          refusedCidr: '10.100.0.0/30',
        },
        {
          node: 'ph-wide',
          problem:
            'pod CIDR 172.16.0.0/16 contains 172.16.5.0/24, a subnet connected to this node (eth1); skipped',
          refusedCidr: '172.16.0.0/16',
        },
        {
          node: 'v6-wide',
          problem: "pod CIDR fd00::/16 contains the node's own InternalIP fd00:100::126; skipped",
          refusedCidr: 'fd00::/16',
        },
      ]);
    });

    it("this node's own pod CIDR over the underlay: no blackhole for it, reported as its peers report it", () => {
      // node-1 given 10.100.0.0/16: it holds node-1's own InternalIP and node-2's, and eth0's subnet.
      // A blackhole there would drop node-1's traffic to node-2 (and to an API server among them).
      const wide: PeerNode = { ...node1, podCIDRs: ['10.100.0.0/16', '10.244.1.0/24'] };
      const out = desiredRoutes(wide, [wide, node2], ethLinks('10.100.0.101'), opts);
      expect(out.routes.filter((r) => r.type === 'blackhole').map((r) => r.dst)).toEqual(['10.244.1.0/24']);
      expect(out.problems).toContainEqual({
        node: 'node-1',
        problem:
          "this node's pod CIDR 10.100.0.0/16 contains the node's own InternalIP 10.100.0.101: no blackhole route for it, and every peer skips it",
      });
      // node-2 skips it the same way.
      const fromNode2 = desiredRoutes(node2, [wide, node2], ethLinks('10.100.1.7'), opts);
      expect(fromNode2.problems).toContainEqual({
        node: 'node-1',
        problem: "pod CIDR 10.100.0.0/16 contains the node's own InternalIP 10.100.0.101; skipped",
        refusedCidr: '10.100.0.0/16',
      });
      // One that is a connected subnet (eth1's, no InternalIP in it): no blackhole to take its place.
      // A connected subnet inside a wider CIDR wins by its prefix: the blackhole stays.
      const leg: LocalLink[] = [
        ...ethLinks('10.100.0.101'),
        { ifindex: 3, name: 'eth1', addresses: [{ family: 4, address: '172.16.5.10', prefixLen: 24 }] },
      ];
      const onLeg: PeerNode = { ...node1, podCIDRs: ['172.16.5.0/24'] };
      const second = desiredRoutes(onLeg, [onLeg], leg, opts);
      expect(second.routes).toEqual([]);
      expect(second.problems.map((p) => p.problem)).toEqual([
        "this node's pod CIDR 172.16.5.0/24 is a subnet connected to it (eth1): no blackhole route for it",
      ]);
      const overLeg: PeerNode = { ...node1, podCIDRs: ['172.16.0.0/16'] };
      const third = desiredRoutes(overLeg, [overLeg], leg, opts);
      expect(third.routes.map((r) => `${r.type} ${r.dst}`)).toEqual(['blackhole 172.16.0.0/16']);
      expect(third.problems).toEqual([]);
    });

    it('routes pod CIDRs inside a wide subnet of the node’s own (a node on 10.0.0.0/8, pods in 10.244.0.0/16)', () => {
      const me: PeerNode = { name: 'node-1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.0.0.5'] };
      const wide = [
        { ifindex: 2, name: 'eth0', addresses: [{ family: 4 as const, address: '10.0.0.5', prefixLen: 8 }] },
      ];
      const out = desiredRoutes(me, [me, peer('node-2', ['10.244.2.0/24'], ['10.0.0.6'])], wide, opts);
      expect(peerRoutes(out)).toEqual(['10.244.2.0/24 via 10.0.0.6']);
      expect(out.problems).toEqual([]);
    });
  });

  it('reports a self node without pod CIDRs and emits no blackhole', () => {
    const out = desiredRoutes({ ...self, podCIDRs: [] }, [], links, opts);
    expect(out.routes).toEqual([]);
    expect(out.problems).toEqual([{ node: 'node-a', problem: 'this node has no valid pod CIDR' }]);
  });

  it('puts every route in the configured table', () => {
    const out = desiredRoutes(self, [peer('b', ['10.244.1.0/24'], ['192.168.1.11'])], links, {
      mode: 'host-gw',
      table: 100,
    });
    expect(out.routes.map((r) => r.table)).toEqual([100, 100, 100]);
  });

  it('is deterministic: peer order and link order do not change the output (property)', () => {
    const nodes = Array.from({ length: 30 }, (_, i) =>
      peer(
        `n${i}`,
        [`10.244.${i + 1}.0/24`, `fd00:10:244:${(i + 1).toString(16)}::/64`],
        [`192.168.1.${20 + i}`, `fd00:1::${(20 + i).toString(16)}`],
      ),
    );
    const base = desiredRoutes(self, nodes, links, opts);
    expect(base.routes).toHaveLength(2 + 60);
    // In name order, as the agent's cache lists them, the planner takes the list as it comes (no map,
    // no sort): the same plan, and a name repeated next to itself is still caught.
    const byName = [...nodes].sort((a, b) => (a.name < b.name ? -1 : 1));
    expect(desiredRoutes(self, byName, links, opts)).toEqual(base);
    const repeated = desiredRoutes(self, [byName[0]!, ...byName], links, opts);
    expect(repeated.problems).toContainEqual({
      node: byName[0]!.name,
      problem: 'node listed 2 times; skipped',
    });
    expect(repeated.routes).toHaveLength(2 + 58);
    fc.assert(
      fc.property(fc.shuffledSubarray(nodes, { minLength: nodes.length }), (shuffled) => {
        expect(desiredRoutes(self, shuffled, [...links].reverse(), opts)).toEqual(base);
      }),
    );
  });

  it('never routes a peer CIDR that overlaps ours or another routed CIDR (property)', () => {
    const arbPeer = fc.record({
      name: fc.constantFrom('a', 'b', 'c', 'd', 'e'),
      podCIDRs: fc.array(
        fc
          .tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 22, max: 25 }))
          .map(([n, l]) => `10.244.${n * 2}.0/${l}`),
        { maxLength: 2 },
      ),
      internalIPs: fc.array(
        fc.constantFrom('192.168.1.50', '192.168.1.51', '203.0.113.1', 'nope', 'fd00:1::5'),
        { maxLength: 2 },
      ),
    });
    fc.assert(
      fc.property(fc.array(arbPeer, { maxLength: 6 }), (ps) => {
        const out = desiredRoutes(self, ps, links, opts);
        const blocks = out.routes.map((r) => parseCidr(r.dst)!);
        for (let i = 0; i < blocks.length; i++) {
          for (let j = i + 1; j < blocks.length; j++)
            expect(cidrsOverlap(blocks[i]!, blocks[j]!)).toBe(false);
        }
        for (const r of out.routes) expect(r.protocol).toBe(126);
        // Every input CIDR that is not routed was reported.
        for (const p of ps) {
          for (const c of p.podCIDRs) {
            if (!out.routes.some((r) => r.dst === c))
              expect(out.problems.some((x) => x.node === p.name)).toBe(true);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
