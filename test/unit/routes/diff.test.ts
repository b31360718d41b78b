import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RouteInfo } from '../../../pkg/datapath/ports.ts';
import { parseCidr } from '../../../pkg/ip/index.ts';
import { diffRoutes, isOwnedRoute, routeKey } from '../../../pkg/routes/diff.ts';

const via = (dst: string, gateway: string, ifindex = 2, extra: Partial<RouteInfo> = {}): RouteInfo => ({
  family: dst.includes(':') ? 6 : 4,
  dst,
  gateway,
  ifindex,
  protocol: 126,
  scope: 'universe',
  type: 'unicast',
  ...extra,
});
const blackhole = (dst: string): RouteInfo => ({
  family: dst.includes(':') ? 6 : 4,
  dst,
  protocol: 126,
  type: 'blackhole',
});
/** What the datapath programs for a local pod: protocol 126 too, but no gateway, scope link, on a veth. */
const podHostRoute = (dst: string, ifindex: number): RouteInfo => ({
  family: dst.includes(':') ? 6 : 4,
  dst,
  ifindex,
  protocol: 126,
  scope: 'link',
  type: 'unicast',
});

describe('isOwnedRoute', () => {
  it('owns gateway routes and blackholes with protocol 126, nothing else', () => {
    expect(isOwnedRoute(via('10.244.1.0/24', '192.168.1.11'))).toBe(true);
    expect(isOwnedRoute(blackhole('10.244.0.0/24'))).toBe(true);
    expect(isOwnedRoute(podHostRoute('10.244.0.5/32', 10))).toBe(false);
    expect(isOwnedRoute(podHostRoute('fd00:10:244::5/128', 10))).toBe(false);
    expect(isOwnedRoute({ ...via('10.244.1.0/24', '192.168.1.11'), protocol: 4 })).toBe(false);
    expect(isOwnedRoute({ ...blackhole('10.244.0.0/24'), protocol: undefined })).toBe(false);
  });

  it('owns the interim gateway-less route an IPv6 onlink write leaves if the agent dies in between', () => {
    const interim: RouteInfo = {
      family: 6,
      dst: 'fd00:10:244:2::/64',
      ifindex: 7,
      protocol: 126,
      scope: 'universe',
    };
    expect(isOwnedRoute(interim)).toBe(true);
    expect(isOwnedRoute({ ...interim, type: 'unicast' })).toBe(true);
    expect(isOwnedRoute({ ...interim, protocol: 4 })).toBe(false);
    // The kernel reports IPv6 host routes at universe scope too: their /128 tells them apart.
    expect(isOwnedRoute({ ...interim, dst: 'fd00:10:244:1::5/128', ifindex: 10 })).toBe(false);
    expect(isOwnedRoute({ ...podHostRoute('fd00:10:244:1::5/128', 10), scope: 'universe' })).toBe(false);
    expect(isOwnedRoute({ ...podHostRoute('10.244.1.5/32', 10), scope: 'universe' })).toBe(false);
    // So a pass finishes the write (a replace, not a conflict forever), or removes it when unwanted.
    const onlink = via('fd00:10:244:2::/64', 'fd00:10:244:2::', 7, { onlink: true });
    expect(diffRoutes([onlink], [interim])).toMatchObject({ replace: [onlink], conflicts: [], remove: [] });
    expect(diffRoutes([], [interim])).toMatchObject({ remove: [interim], conflicts: [] });
  });
});

describe('routeKey', () => {
  it('is family + canonical dst + table (main when unset)', () => {
    expect(routeKey(via('fd00:10:244:1:0:0:0:0/64', 'fd00::1'))).toBe(
      routeKey(via('fd00:10:244:1::/64', 'fd00::2')),
    );
    expect(routeKey({ ...blackhole('10.0.0.0/24'), table: 254 })).toBe(routeKey(blackhole('10.0.0.0/24')));
    expect(routeKey({ ...blackhole('10.0.0.0/24'), table: 100 })).not.toBe(
      routeKey(blackhole('10.0.0.0/24')),
    );
  });
});

describe('diffRoutes', () => {
  it('adds, replaces on a changed gateway/device/type, removes stale owned routes, counts unchanged', () => {
    const desired = [
      blackhole('10.244.0.0/24'),
      via('10.244.1.0/24', '192.168.1.11'),
      via('10.244.2.0/24', '192.168.1.12'),
      via('10.244.3.0/24', '192.168.1.13', 3),
      via('10.244.4.0/24', '192.168.1.14'),
    ];
    const programmed = [
      // What the kernel reports: table spelled out, IPv6-style non-canonical text, no scope.
      { family: 4 as const, dst: '10.244.0.0/24', protocol: 126, type: 'blackhole' as const, table: 254 },
      { ...via('10.244.1.0/24', '192.168.1.11'), table: 254 },
      via('10.244.2.0/24', '192.168.1.99'), // gateway moved
      via('10.244.3.0/24', '192.168.1.13', 2), // device moved
      blackhole('10.244.4.0/24'), // was our blackhole, now a peer's CIDR
      via('10.244.9.0/24', '192.168.1.19'), // node gone
      podHostRoute('10.244.0.7/32', 12), // a local pod: never touched
    ];
    const d = diffRoutes(desired, programmed);
    expect(d.unchanged).toBe(2);
    expect(d.add).toEqual([]);
    expect(d.replace.map((r) => r.dst)).toEqual(['10.244.2.0/24', '10.244.3.0/24', '10.244.4.0/24']);
    expect(d.remove.map((r) => r.dst)).toEqual(['10.244.9.0/24']);
    expect(d.conflicts).toEqual([]);
  });

  it('an IPv6 route a dump handed twice is one route: kept, not removed as a second one; removed once when unwanted', () => {
    const peer = via('fd00:10:244:1::/64', 'fd00:88::11');
    const gone = via('fd00:10:244:9::/64', 'fd00:88::19');
    const d = diffRoutes([peer], [peer, { ...peer }, gone, { ...gone }]);
    expect(d).toMatchObject({ unchanged: 1, add: [], replace: [], conflicts: [] });
    expect(d.remove).toEqual([gone]);
    // IPv4 resumes its dumps by key: two routes of ours at one metric are real (`ip route append`).
    const v4 = via('10.244.1.0/24', '192.168.1.11');
    const appended = via('10.244.1.0/24', '192.168.1.99');
    expect(diffRoutes([v4], [v4, appended]).remove).toEqual([appended]);
    // Ours at another metric is a second route on the prefix in both families.
    const higher = { ...peer, metric: 2048 };
    expect(diffRoutes([peer], [peer, higher]).remove).toEqual([higher]);
  });

  it('never removes a route it does not own, even when passed one', () => {
    const programmed = [
      podHostRoute('10.244.0.7/32', 12),
      podHostRoute('fd00:10:244::7/128', 12),
      { ...via('10.1.0.0/16', '192.168.1.1'), protocol: 4 },
      { family: 4 as const, dst: '10.2.0.0/16', type: 'blackhole' as const },
    ];
    expect(diffRoutes([], programmed)).toEqual({
      add: [],
      replace: [],
      remove: [],
      unchanged: 0,
      conflicts: [],
    });
  });

  it('reports, and does not replace, a desired route whose key is held by a route it does not own', () => {
    const pod = podHostRoute('10.244.5.0/32', 12);
    const d = diffRoutes([via('10.244.5.0/32', '192.168.1.15')], [pod]);
    expect(d.replace).toEqual([]);
    expect(d.add).toEqual([]);
    expect(d.conflicts).toEqual([{ desired: via('10.244.5.0/32', '192.168.1.15'), existing: pod }]);
  });

  it('compares gateways canonically (IPv6 spelled differently is unchanged)', () => {
    const d = diffRoutes(
      [via('fd00:10:244:1::/64', 'fd00:1::11')],
      [via('fd00:10:244:1:0:0:0:0/64', 'FD00:1:0:0:0:0:0:11')],
    );
    expect(d.unchanged).toBe(1);
  });

  it('removes extra owned routes with the same key (e.g. IPv6 at two metrics), keeps the matching one', () => {
    const keep = via('fd00:10:244:1::/64', 'fd00:1::11', 2, { metric: 1024 });
    const extra = via('fd00:10:244:1::/64', 'fd00:1::12', 2, { metric: 100 });
    const d = diffRoutes([via('fd00:10:244:1::/64', 'fd00:1::11')], [extra, keep]);
    expect(d.unchanged).toBe(1);
    expect(d.remove).toEqual([extra]);
  });

  it('a foreign route behind ours (a higher metric) holds no key of ours; one on it or in front of it does', () => {
    // An IPv4 dump leaves metric 0 out; IPv6 says 1024.
    const ours4 = via('10.244.152.0/24', '10.100.0.152');
    const behind4 = { ...via('10.244.152.0/24', '10.100.0.1'), protocol: 4, metric: 100 };
    const want4 = via('10.244.152.0/24', '10.100.0.153');
    const ours6 = via('fd00:10:244:98::/64', 'fd00:100::152', 2, { metric: 1024 });
    const behind6 = { ...via('fd00:10:244:98::/64', 'fd00:100::1'), protocol: 4, metric: 2000 };
    const want6 = via('fd00:10:244:98::/64', 'fd00:100::153');
    const d = diffRoutes([want4, want6], [behind4, ours4, behind6, ours6]);
    expect(d).toMatchObject({ replace: [want4, want6], add: [], remove: [], conflicts: [] });
    // And unchanged, or added where ours is missing.
    expect(diffRoutes([want4], [behind4, { ...want4 }])).toMatchObject({ unchanged: 1, conflicts: [] });
    expect(diffRoutes([want4, want6], [behind4, behind6])).toMatchObject({
      add: [want4, want6],
      conflicts: [],
      remove: [],
    });
    // On our key (the same metric) or in front of ours (IPv6, lower: it wins the lookups) it stays a conflict.
    const foreign = (r: RouteInfo, metric?: number): RouteInfo => ({
      ...r,
      gateway: r.family === 4 ? '10.100.0.1' : 'fd00:100::1',
      protocol: 4,
      ...(metric === undefined ? {} : { metric }),
    });
    for (const [what, desired, programmed] of [
      [
        'IPv4 metric 0, left out',
        want4,
        [foreign(want4), via('10.244.152.0/24', '10.100.0.152', 2, { metric: 5 })],
      ],
      ['IPv4 metric 0, spelled out', want4, [foreign(want4, 0)]],
      ['IPv6 metric 1024', want6, [foreign(want6, 1024)]],
      ['IPv6 metric 100, in front', want6, [foreign(want6, 100), ours6]],
      [
        'a holder listed by key only',
        want6,
        [{ family: 6, dst: want6.dst, protocol: 4, unreadable: true }, ours6],
      ],
      [
        // Ours with a nexthop someone appended (`ip -6 route append`): dumped with our protocol.
        'an IPv6 multipath route with our protocol, listed by key only',
        want6,
        [{ family: 6, dst: want6.dst, protocol: 126, unreadable: true }],
      ],
    ] as [string, RouteInfo, RouteInfo[]][]) {
      const d = diffRoutes([desired], programmed);
      expect([what, d.conflicts.map((c) => c.existing)]).toEqual([what, [programmed[0]]]);
      expect([what, d.add, d.replace, d.remove]).toEqual([what, [], [], []]);
    }
  });

  it('a route of ours only at another metric is not on our key: ours is added, that one removed', () => {
    const stray = via('10.244.152.0/24', '10.100.0.153', 2, { metric: 5 });
    const want = via('10.244.152.0/24', '10.100.0.153');
    expect(diffRoutes([want], [stray])).toMatchObject({
      add: [want],
      replace: [],
      remove: [stray],
      unchanged: 0,
    });
  });

  it('applying the diff to the programmed set yields exactly the desired set (property)', () => {
    const arbRoute = fc
      .record({
        n: fc.integer({ min: 0, max: 12 }),
        gw: fc.integer({ min: 1, max: 3 }),
        dev: fc.integer({ min: 2, max: 3 }),
        kind: fc.constantFrom('via', 'blackhole', 'pod'),
      })
      .map(({ n, gw, dev, kind }) =>
        kind === 'via'
          ? via(`10.244.${n}.0/24`, `192.168.1.${gw}`, dev)
          : kind === 'blackhole'
            ? blackhole(`10.244.${n}.0/24`)
            : podHostRoute(`10.244.${n}.9/32`, 20 + n),
      );
    const uniq = (rs: RouteInfo[]) => {
      const m = new Map<string, RouteInfo>();
      for (const r of rs) if (!m.has(routeKey(r))) m.set(routeKey(r), r);
      return [...m.values()];
    };
    fc.assert(
      fc.property(fc.array(arbRoute, { maxLength: 15 }), fc.array(arbRoute, { maxLength: 15 }), (d0, p0) => {
        const desired = uniq(d0.filter(isOwnedRoute));
        const programmed = uniq(p0);
        const d = diffRoutes(desired, programmed);
        // Simulate the kernel: replaceRoute upserts by key, deleteRoute removes that exact route.
        const table = new Map(programmed.map((r) => [routeKey(r), r]));
        for (const r of [...d.replace, ...d.add]) table.set(routeKey(r), r);
        for (const r of d.remove) {
          expect(isOwnedRoute(r)).toBe(true);
          table.delete(routeKey(r));
        }
        for (const r of desired) {
          const conflict = d.conflicts.some((c) => c.desired === r);
          if (!conflict) expect(table.get(routeKey(r))?.gateway).toBe(r.gateway);
        }
        for (const r of programmed) if (!isOwnedRoute(r)) expect(table.get(routeKey(r))).toBe(r);
        for (const [k, r] of table) {
          if (isOwnedRoute(r)) expect(desired.some((x) => routeKey(x) === k)).toBe(true);
        }
        expect(d.unchanged + d.add.length + d.replace.length + d.conflicts.length).toBe(desired.length);
      }),
      { numRuns: 500 },
    );
  });
});

/** "fd00:10:244::/64" -> "fd00:10:244:0:0:0:0:0/64": what a naive formatter in an adapter might emit. */
function longForm(cidr: string): string {
  const c = parseCidr(cidr)!;
  const groups = Array.from({ length: 8 }, (_, i) =>
    ((c.network >> BigInt((7 - i) * 16)) & 0xffffn).toString(16),
  );
  return `${groups.join(':')}/${c.prefixLen}`;
}

describe('desiredRoutes + diffRoutes', () => {
  it('a second pass over what the first pass programmed changes nothing (restart idempotence)', async () => {
    const { desiredRoutes } = await import('../../../pkg/routes/desired.ts');
    const links = [
      {
        ifindex: 2,
        name: 'eth0',
        addresses: [
          { family: 4 as const, address: '192.168.1.10', prefixLen: 24 },
          { family: 6 as const, address: 'fd00:1::10', prefixLen: 64 },
        ],
      },
    ];
    const self = { name: 'a', podCIDRs: ['10.244.0.0/24', 'fd00:10:244::/64'], internalIPs: [] };
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 200 }), { maxLength: 40 }), (ids) => {
        const peers = ids.map((i) => ({
          name: `n${i}`,
          podCIDRs: [`10.244.${i}.0/24`, `fd00:10:244:${i.toString(16)}::/64`],
          internalIPs: [`192.168.1.${i + 20 > 254 ? 11 : i + 20}`, `fd00:1::${i.toString(16)}:1`],
        }));
        const { routes } = desiredRoutes(self, peers, links, { mode: 'host-gw' });
        // How the kernel reports them back: long-form IPv6, table spelled out, IPv6 blackholes on lo.
        const programmed: RouteInfo[] = routes.map((r) => ({
          ...r,
          table: 254,
          dst: r.family === 6 ? longForm(r.dst) : r.dst,
          ...(r.type === 'blackhole' && r.family === 6 ? { ifindex: 1 } : {}),
          ...(r.family === 6 ? { metric: 1024 } : {}),
        }));
        const d = diffRoutes(routes, programmed);
        expect(d).toEqual({ add: [], replace: [], remove: [], unchanged: routes.length, conflicts: [] });
      }),
      { numRuns: 200 },
    );
  });
});
