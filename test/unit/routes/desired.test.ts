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

  it('prefers the longest matching subnet, then the lowest ifindex', () => {
    const l: LocalLink[] = [
      { ifindex: 7, name: 'wide', addresses: [{ family: 4, address: '10.0.0.1', prefixLen: 8 }] },
      { ifindex: 9, name: 'narrow-b', addresses: [{ family: 4, address: '10.1.0.2', prefixLen: 16 }] },
      { ifindex: 8, name: 'narrow-a', addresses: [{ family: 4, address: '10.1.0.1', prefixLen: 16 }] },
    ];
    const out = desiredRoutes(self, [peer('b', ['10.244.1.0/24'], ['10.1.2.3'])], l, opts);
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
        'overlaps-us',
        'v6-only-ip',
        'x2',
      ].sort(),
    );
    expect(byNode.get('overlaps-us')!.join()).toMatch(/overlaps this node's pod CIDR 10\.244\.0\.0\/24/);
    expect(byNode.get('x2')!.join()).toMatch(
      /pod CIDR 10\.244\.6\.0\/23 contains 10\.244\.6\.0\/24 of node x1; skipped \(the narrower keeps its route\)/,
    );
    expect(byNode.get('v6-only-ip')!.join()).toMatch(/no IPv4 InternalIP/);
    expect(byNode.get('claims-our-ip')!.join()).toMatch(/own addresses/);
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
    expect(twins.problems.map((p) => [p.node, p.problem])).toEqual([
      ['n2', "pod CIDR 10.244.2.0/24 is also node twin's; skipped on both"],
      ['twin', "pod CIDR 10.244.2.0/24 is also node n2's; skipped on both"],
    ]);
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
    expect(out.routes.every((r) => r.table === 100)).toBe(true);
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
