import { describe, expect, it } from 'vitest';
import {
  aggregate,
  changesPodNetwork,
  MAX_EXACT,
  type PodNetworkInput,
  podNetwork,
} from '../../../pkg/firewall/pod-network.ts';
import { formatCidr, parseCidr } from '../../../pkg/ip/index.ts';

const NODES = { nodeIPs: ['10.100.0.11', '10.100.0.12', 'fd00:100::11'], connected: ['10.100.0.0/24'] };

function input(over: Partial<PodNetworkInput>): PodNetworkInput {
  return { own: ['10.244.1.0/24'], accepted: [], ...NODES, ...over };
}

describe('podNetwork: the prefixes the forward accepts match', () => {
  it('per family, the smallest one prefix over every accepted pod CIDR and this node’s', () => {
    const net = podNetwork(
      input({
        own: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
        accepted: ['10.244.2.0/24', '10.244.1.0/24', 'fd00:10:244:2::/64', 'fd00:10:244:a::/64'],
      }),
    );
    expect(net.prefixes).toEqual(['10.244.0.0/22', 'fd00:10:244::/60']);
    expect(net.families).toEqual([
      { family: 4, cover: '10.244.0.0/22' },
      { family: 6, cover: 'fd00:10:244::/60' },
    ]);
  });

  it("a node alone, or with peers outside its family only: this node's own pod CIDR", () => {
    expect(podNetwork(input({})).prefixes).toEqual(['10.244.1.0/24']);
    expect(podNetwork(input({ accepted: ['fd00:10:244:2::/64'] })).prefixes).toEqual(['10.244.1.0/24']);
  });

  it('a wider pod CIDR is covered whole; a kube-controller-manager /16 of /24s stays inside it', () => {
    expect(podNetwork(input({ accepted: ['10.244.0.0/16'] })).prefixes).toEqual(['10.244.0.0/16']);
    const many = Array.from({ length: 200 }, (_, i) => `10.244.${i}.0/24`);
    expect(podNetwork(input({ accepted: many })).prefixes).toEqual(['10.244.0.0/16']);
  });

  it('a cover holding a node’s InternalIP gives way to the pod CIDRs one by one, and says why', () => {
    // Pod CIDRs 10.0.1.0/24 and 10.200.0.0/24 cover 10.0.0.0/8: the nodes' 10.100.0.0/24 too.
    const net = podNetwork(input({ own: ['10.0.1.0/24'], accepted: ['10.200.0.0/24'], connected: [] }));
    expect(net.prefixes).toEqual(['10.0.1.0/24', '10.200.0.0/24']);
    expect(net.families).toEqual([
      {
        family: 4,
        cover: '10.0.0.0/8',
        narrowed: '10.0.0.0/8 holds the InternalIP 10.100.0.11 of a node',
        exact: ['10.0.1.0/24', '10.200.0.0/24'],
      },
    ]);
  });

  it('a cover overlapping a connected subnet, either way, gives way', () => {
    const docker = podNetwork(
      input({ accepted: ['10.245.0.0/24'], nodeIPs: [], connected: ['10.244.200.0/24'] }),
    );
    expect(docker.prefixes).toEqual(['10.244.1.0/24', '10.245.0.0/24']);
    expect(docker.families[0]?.narrowed).toBe(
      '10.244.0.0/15 overlaps 10.244.200.0/24, a subnet this node is connected to',
    );
    // A node on 10.0.0.0/8 with pods in 10.244.0.0/16: the cover's addresses no pod holds may be
    // hosts of that subnet; the pod CIDRs themselves (merged where siblings) are pods only.
    const inside = podNetwork(
      input({ accepted: ['10.244.0.0/24', '10.244.2.0/24'], nodeIPs: [], connected: ['10.0.0.0/8'] }),
    );
    expect(inside.prefixes).toEqual(['10.244.0.0/23', '10.244.2.0/24']);
    expect(inside.families[0]?.narrowed).toBe(
      '10.244.0.0/22 overlaps 10.0.0.0/8, a subnet this node is connected to',
    );
  });

  it('a cover mostly of address space no pod CIDR holds gives way: two pools far apart', () => {
    // 10.244.1.0/24 + 10.250.0.0/24: one prefix over both is 10.240.0.0/12, 2 of its 4,096 /24s.
    const v4 = podNetwork(input({ accepted: ['10.250.0.0/24'], nodeIPs: [], connected: [] }));
    expect(v4.prefixes).toEqual(['10.244.1.0/24', '10.250.0.0/24']);
    expect(v4.families[0]?.narrowed).toBe(
      '10.240.0.0/12 is mostly not pod CIDRs (they hold less than 1/16 of it)',
    );
    // A ULA pool and a global one, with no IPv6 InternalIP to guard by: one prefix would be ::/0.
    const v6 = podNetwork(
      input({ own: ['fd00:10:244:1::/64'], accepted: ['2001:db8:5::/64'], nodeIPs: [], connected: [] }),
    );
    expect(v6.prefixes).toEqual(['2001:db8:5::/64', 'fd00:10:244:1::/64']);
    expect(v6.families[0]?.cover).toBe('::/0');
    // Dense enough: 3 of the 16 /64s of a /60 (the first test), 1 + 1 of 4 here.
    expect(podNetwork(input({ accepted: ['10.244.3.0/24'], connected: [] })).prefixes).toEqual([
      '10.244.0.0/22',
    ]);
  });

  it(`more than ${MAX_EXACT} pod CIDRs one by one: this node's own only`, () => {
    // Every other /24 of 10.0.0.0/16 inside the node's 10.0.0.0/8: nothing merges.
    const scattered = Array.from({ length: MAX_EXACT + 1 }, (_, i) => `10.0.${2 * i + 2}.0/24`);
    const net = podNetwork(
      input({ own: ['10.0.0.0/24'], accepted: scattered, nodeIPs: [], connected: ['10.0.0.0/8'] }),
    );
    expect(net.prefixes).toEqual(['10.0.0.0/24']);
    expect(net.families[0]?.exact).toBeUndefined();
    expect(net.families[0]?.narrowed).toMatch(/overlaps 10\.0\.0\.0\/8/);
  });

  it('each family decides alone', () => {
    const net = podNetwork({
      own: ['10.0.1.0/24', 'fd00:10:244:1::/64'],
      accepted: ['10.200.0.0/24', 'fd00:10:244:2::/64'],
      nodeIPs: ['10.100.0.11', 'fd00:100::11'],
      connected: [],
    });
    expect(net.prefixes).toEqual(['10.0.1.0/24', '10.200.0.0/24', 'fd00:10:244::/62']);
  });

  it('text that is not a CIDR is passed over', () => {
    expect(podNetwork(input({ accepted: ['nonsense', '10.244.3.0/24'] })).prefixes).toEqual([
      '10.244.0.0/22',
    ]);
  });
});

describe('changesPodNetwork: whether a peer’s change asks for another check', () => {
  const net = podNetwork(input({ accepted: ['10.244.2.0/24'] }));

  it('a pod CIDR outside the cover does; one inside does not', () => {
    expect(changesPodNetwork(net, ['10.244.3.0/24'], [])).toBe(false);
    expect(changesPodNetwork(net, ['10.244.4.0/24'], [])).toBe(true);
    expect(changesPodNetwork(net, ['10.244.0.0/16'], [])).toBe(true);
  });

  it('an InternalIP moving into a cover in use does; into one already given up, not', () => {
    expect(changesPodNetwork(net, [], ['10.244.3.1'])).toBe(true);
    expect(changesPodNetwork(net, [], ['10.100.0.13'])).toBe(false);
    const narrowed = podNetwork(input({ own: ['10.0.1.0/24'], accepted: ['10.200.0.0/24'] }));
    expect(changesPodNetwork(narrowed, [], ['10.0.0.7'])).toBe(false);
  });

  it('pod CIDRs accepted one by one: a peer’s CIDR that none of them holds does, inside the cover too', () => {
    const oneByOne = podNetwork(input({ own: ['10.0.1.0/24'], accepted: ['10.200.0.0/24'] }));
    expect(changesPodNetwork(oneByOne, ['10.200.0.0/24'], [])).toBe(false);
    expect(changesPodNetwork(oneByOne, ['10.7.0.0/24'], [])).toBe(true);
  });

  it('a family the node has no cover of does not', () => {
    expect(changesPodNetwork(net, ['fd00:10:244:9::/64'], ['fd00:10:244:9::1'])).toBe(false);
  });
});

describe('aggregate: the fewest prefixes holding exactly the same addresses', () => {
  const agg = (texts: string[]) => aggregate(texts.map((t) => parseCidr(t)!)).map(formatCidr);

  it('merges siblings up as far as they go, drops nested and repeated ones, keeps gaps', () => {
    expect(agg(['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24', '10.0.3.0/24'])).toEqual(['10.0.0.0/22']);
    expect(agg(['10.0.3.0/24', '10.0.0.0/24', '10.0.2.0/24'])).toEqual(['10.0.0.0/24', '10.0.2.0/23']);
    expect(agg(['10.0.0.0/16', '10.0.5.0/24', '10.0.0.0/16'])).toEqual(['10.0.0.0/16']);
    expect(agg(['10.0.1.0/24', '10.0.2.0/24'])).toEqual(['10.0.1.0/24', '10.0.2.0/24']);
    expect(agg(['fd00::/65', 'fd00:0:0:0:8000::/65'])).toEqual(['fd00::/64']);
  });
});
