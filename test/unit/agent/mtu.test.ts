import { describe, expect, it } from 'vitest';
import { chooseMtu, ipv6MtuProblem } from '../../../pkg/agent/mtu.ts';
import type { LinkInfo } from '../../../pkg/datapath/ports.ts';

const link = (index: number, name: string, mtu: number): LinkInfo => ({
  index,
  name,
  mtu,
  kind: undefined,
  mac: '00:00:00:00:00:00',
  up: true,
});

describe('chooseMtu', () => {
  const links = [link(1, 'lo', 65536), link(2, 'eth0', 9000), link(3, 'eth1', 1500)];
  const localLinks = [
    { ifindex: 2, name: 'eth0', addresses: [{ family: 4 as const, address: '10.0.0.5', prefixLen: 24 }] },
    { ifindex: 3, name: 'eth1', addresses: [{ family: 4 as const, address: '192.0.2.5', prefixLen: 24 }] },
  ];
  const waysOut = [{ family: 4 as const, dst: '0.0.0.0/0', ifindexes: [3] }];

  it('an explicit setting wins', () => {
    expect(
      chooseMtu({
        configured: 1400,
        internalIPs: ['10.0.0.5'],
        localLinks,
        links,
        waysOut,
        overhead: 50,
      }),
    ).toEqual({ mtu: 1400, source: 'configured' });
  });

  it("uses the InternalIP's interface (not blindly the default route's) minus the encapsulation overhead", () => {
    const c = chooseMtu({
      configured: 0,
      internalIPs: ['10.0.0.5'],
      localLinks,
      links,
      waysOut,
      overhead: 50,
    });
    expect(c.mtu).toBe(8950);
    expect(c.source).toContain('eth0');
    expect(c.links).toEqual([{ index: 2, mtu: 9000, name: 'eth0' }]);
  });

  it("dual-stack with each family's InternalIP on its own interface: the smaller MTU, both links watched", () => {
    const split = [
      { ifindex: 2, name: 'eth0', addresses: [{ family: 6 as const, address: 'fd00::5', prefixLen: 64 }] },
      { ifindex: 3, name: 'eth1', addresses: [{ family: 4 as const, address: '192.0.2.5', prefixLen: 24 }] },
    ];
    const c = chooseMtu({
      configured: 0,
      internalIPs: ['192.0.2.5', 'fd00::5'],
      localLinks: split,
      links,
      waysOut,
      overhead: 0,
    });
    expect(c).toEqual({
      mtu: 1500,
      source: 'eth1 (InternalIPs, smallest MTU of eth1, eth0)',
      links: [
        { index: 3, mtu: 1500, name: 'eth1' },
        { index: 2, mtu: 9000, name: 'eth0' },
      ],
    });
    // Both on one interface: that one, named as before.
    const one = chooseMtu({
      configured: 0,
      internalIPs: ['10.0.0.5', '10.0.0.5'],
      localLinks,
      links,
      waysOut,
      overhead: 0,
    });
    expect(one).toEqual({
      mtu: 9000,
      source: 'eth0 (InternalIP)',
      links: [{ index: 2, mtu: 9000, name: 'eth0' }],
    });
  });

  it("an InternalIP on lo (a /32, or any address on a loopback device) is not the way out: the default route's device", () => {
    const onLo = [
      {
        ifindex: 1,
        name: 'lo',
        addresses: [
          { family: 4 as const, address: '10.9.9.9', prefixLen: 32 },
          { family: 6 as const, address: 'fd00:99::9', prefixLen: 128 },
        ],
      },
      ...localLinks,
    ];
    const choose = (internalIPs: string[], ll = onLo, l = links) =>
      chooseMtu({
        configured: 0,
        internalIPs,
        localLinks: ll,
        links: l,
        waysOut,
        overhead: 70,
      });
    expect(choose(['10.9.9.9', 'fd00:99::9'])).toEqual({
      mtu: 1430,
      source: 'eth1 (default route) minus 70 bytes of encapsulation',
      links: [{ index: 3, mtu: 1500, name: 'eth1' }],
    });
    // A subnet on the loopback device (IFF_LOOPBACK) does not make it the node link either.
    const loSubnet = [
      { ...onLo[0]!, addresses: [{ family: 4 as const, address: '10.9.9.9', prefixLen: 24 }] },
    ];
    const flagged = links.map((l) => (l.name === 'lo' ? { ...l, loopback: true as const } : l));
    expect(choose(['10.9.9.9'], loSubnet, flagged).source).toMatch(/^eth1 \(default route\)/);
    // A host-length address on a real NIC (a cloud's /32): its own MTU comes through the default route.
    const nic32 = [
      { ifindex: 2, name: 'eth0', addresses: [{ family: 4 as const, address: '10.0.0.5', prefixLen: 32 }] },
    ];
    expect(choose(['10.0.0.5'], nic32).source).toMatch(/^eth1 \(default route\)/);
  });

  it('falls back to the way out, then to 1500', () => {
    expect(chooseMtu({ configured: 0, internalIPs: [], localLinks, links, waysOut, overhead: 0 }).mtu).toBe(
      1500,
    );
    expect(
      chooseMtu({ configured: 0, internalIPs: [], localLinks, links: [], waysOut: [], overhead: 70 }),
    ).toEqual({ mtu: 1430, source: 'fallback 1500 minus 70 bytes of encapsulation', fallback: true });
  });
});

describe('chooseMtu: an InternalIP on lo behind a multipath default route', () => {
  // The InternalIP is a /32 on lo; traffic leaves over up1 (MTU 9000) and up2 (MTU 1400), the two
  // nexthops of the default route (ECMP): nothing holds the InternalIP on a subnet.
  const links = [link(1, 'lo', 65536), link(2, 'up1', 9000), link(3, 'up2', 1400)];
  const localLinks = [
    { ifindex: 1, name: 'lo', addresses: [{ family: 4 as const, address: '10.9.9.9', prefixLen: 32 }] },
  ];
  const base = { configured: 0, internalIPs: ['10.9.9.9'], localLinks, links, overhead: 50 };

  it('takes the smallest MTU among the nexthops: flows may leave by either', () => {
    expect(chooseMtu({ ...base, waysOut: [{ family: 4, dst: '0.0.0.0/0', ifindexes: [2, 3] }] })).toEqual({
      mtu: 1350,
      source: 'up2 (default route, smallest MTU of up1, up2) minus 50 bytes of encapsulation',
      // Both devices are watched: either one's change can make it the smallest.
      links: [
        { index: 2, mtu: 9000, name: 'up1' },
        { index: 3, mtu: 1400, name: 'up2' },
      ],
    });
    // Both families: one route MTU serves both, so the smaller way out wins.
    const both = [
      { family: 4 as const, dst: '0.0.0.0/0', ifindexes: [2] },
      { family: 6 as const, dst: '::/0', ifindexes: [3] },
    ];
    expect(chooseMtu({ ...base, waysOut: both })).toMatchObject({
      mtu: 1350,
      source: expect.stringMatching(/^up2 /),
    });
    // A route off the node other than a default route says so.
    const specific = [{ family: 4 as const, dst: '8.0.0.0/8', ifindexes: [2] }];
    expect(chooseMtu({ ...base, waysOut: specific }).source).toBe(
      'up1 (route 8.0.0.0/8) minus 50 bytes of encapsulation',
    );
  });

  it('without a way out keeps the last MTU found instead of dropping to 1500', () => {
    const found = chooseMtu({ ...base, waysOut: [{ family: 4, dst: '0.0.0.0/0', ifindexes: [2, 3] }] });
    const kept = chooseMtu({ ...base, waysOut: [], last: { ...found, overhead: 50 } });
    expect(kept).toEqual({
      mtu: 1350,
      source:
        'up2 (default route, smallest MTU of up1, up2) minus 50 bytes of encapsulation, kept: no way out of the node found',
      kept: true,
    });
    // Kept again, the source does not grow.
    expect(chooseMtu({ ...base, waysOut: [], last: { ...kept, overhead: 50 } })).toEqual(kept);
    // Found again: the way out, not the kept value.
    expect(
      chooseMtu({
        ...base,
        waysOut: [{ family: 4, dst: '0.0.0.0/0', ifindexes: [2] }],
        last: { ...kept, overhead: 50 },
      }),
    ).toMatchObject({ mtu: 8950 });
  });

  it('assumes 1500 when there is nothing to keep: no last choice, a fallback, or another overhead', () => {
    const fallback = {
      mtu: 1450,
      source: 'fallback 1500 minus 50 bytes of encapsulation',
      fallback: true as const,
    };
    expect(chooseMtu({ ...base, waysOut: [] })).toEqual(fallback);
    const initial = { mtu: 1500, source: 'not detected yet', overhead: 0, fallback: true as const };
    expect(chooseMtu({ ...base, waysOut: [], last: initial })).toEqual(fallback);
    expect(chooseMtu({ ...base, waysOut: [], last: { mtu: 8930, source: 'x', overhead: 70 } })).toEqual(
      fallback,
    );
  });
});

describe('ipv6MtuProblem', () => {
  it('names the MTU, where it came from and the IPv6 pod CIDR; none at 1280 or for IPv4 alone', () => {
    expect(ipv6MtuProblem(1279, ['10.244.1.0/24', 'fd00:10:244:1::/64'], 'eth0 (InternalIP)')).toBe(
      "pod MTU 1279 (eth0 (InternalIP)) is below 1280, the smallest MTU IPv6 runs on, and pod CIDR fd00:10:244:1::/64 is IPv6: set --mtu to 1280 or more, or raise the uplink's MTU",
    );
    expect(ipv6MtuProblem(1280, ['fd00:10:244:1::/64'], 'configured')).toBeUndefined();
    expect(ipv6MtuProblem(576, ['10.244.1.0/24'], 'configured')).toBeUndefined();
  });
});
