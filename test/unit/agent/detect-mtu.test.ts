import { describe, expect, it } from 'vitest';
import { detectMtu } from '../../../pkg/agent/mtu-detect.ts';
import type { NetlinkHandle, RouteInfo, RouteLookup } from '../../../pkg/datapath/ports.ts';

/**
 * A host with eth0 (MTU 9000) holding 192.168.1.5, ens5 (MTU 1500) and ens6 (MTU 1400) as uplinks,
 * and lo holding 10.9.9.9/32 (an InternalIP announced by BGP, say). `waysOut` is what the kernel's
 * lookup of an off-node address answers; `dumped` what a dump of the route table shows. A multipath
 * default route (ECMP over ens5 and ens6) is not in a dump's RouteInfo list at all (parseRoute skips
 * RTA_MULTIPATH), nor is a device given for one on a nexthop group.
 */
function host(waysOut: Partial<Record<4 | 6, RouteLookup>>, dumped: RouteInfo[] = []) {
  const state = { routeListings: 0, lookups: [] as string[] };
  const h = {
    listLinks: async () => [
      { index: 1, name: 'lo', mac: '00:00:00:00:00:00', mtu: 65536, up: true, loopback: true },
      { index: 2, name: 'eth0', mac: '', mtu: 9000, up: true },
      { index: 3, name: 'ens5', mac: '', mtu: 1500, up: true },
      { index: 4, name: 'ens6', mac: '', mtu: 1400, up: true },
    ],
    listAddresses: async () => [
      { family: 4, ifindex: 1, address: '127.0.0.1', prefixLen: 8, scope: 'host' },
      { family: 4, ifindex: 1, address: '10.9.9.9', prefixLen: 32, scope: 'universe' },
      { family: 4, ifindex: 2, address: '192.168.1.5', prefixLen: 24, scope: 'universe' },
      { family: 4, ifindex: 3, address: '10.0.0.9', prefixLen: 24, scope: 'universe' },
      { family: 4, ifindex: 4, address: '10.0.1.9', prefixLen: 24, scope: 'universe' },
    ],
    listRoutes: async (f: { family?: number } = {}) => {
      state.routeListings++;
      return dumped.filter((r) => f.family === undefined || r.family === f.family);
    },
    routeTo: async (address: string) => {
      state.lookups.push(address);
      return waysOut[address.includes(':') ? 6 : 4];
    },
  } as unknown as NetlinkHandle;
  return { h, state };
}

const ecmp: RouteLookup = { family: 4, dst: '0.0.0.0/0', ifindexes: [3, 4] };
const single: RouteLookup = { family: 4, dst: '0.0.0.0/0', ifindexes: [3] };
const onLo = { name: 'n1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['10.9.9.9'] };

function logger() {
  const warnings: string[] = [];
  return { log: { warn: (_o: object, msg: string) => warnings.push(msg) }, warnings };
}

describe('detectMtu', () => {
  it('takes the MTU of the interface holding an InternalIP, without looking up or listing routes', async () => {
    const x = host({ 4: single });
    const choice = await detectMtu(
      x.h,
      { name: 'n1', podCIDRs: [], internalIPs: ['192.168.1.5'] },
      'host-gw',
    );
    expect(choice).toMatchObject({ mtu: 9000, source: 'eth0 (InternalIP)' });
    expect(x.state).toEqual({ routeListings: 0, lookups: [] });
  });

  it('falls back to the way out (one lookup, no dump) when no interface holds an InternalIP', async () => {
    const x = host({ 4: single });
    const choice = await detectMtu(x.h, { name: 'n1', podCIDRs: [], internalIPs: ['172.16.0.9'] }, 'host-gw');
    expect(choice).toMatchObject({ mtu: 1500, source: 'ens5 (default route)' });
    expect(x.state).toEqual({ routeListings: 0, lookups: ['8.8.8.8'] });
  });

  it('an InternalIP on lo behind an ECMP default route: the smaller uplink MTU, not lo’s, not 1500', async () => {
    const x = host({ 4: ecmp });
    const choice = await detectMtu(x.h, onLo, 'vxlan');
    expect(choice).toMatchObject({
      mtu: 1350,
      overhead: 50,
      source: 'ens6 (default route, smallest MTU of ens5, ens6) minus 50 bytes of encapsulation',
    });
    // Both uplinks are followed: either one's change can make it the smallest.
    expect(choice.links?.map((l) => l.mtu).sort((a, b) => a - b)).toEqual([1400, 1500]);
    expect(x.state.routeListings).toBe(0);
  });

  it('no way out for a pass: the last MTU is kept, with one warning; found again, it follows', async () => {
    const { log, warnings } = logger();
    const first = await detectMtu(host({ 4: ecmp }).h, onLo, 'vxlan', { log });
    const missing = host({});
    const kept = await detectMtu(missing.h, onLo, 'vxlan', { last: first, log });
    expect(kept).toMatchObject({ mtu: 1350, overhead: 50, kept: true });
    const again = await detectMtu(missing.h, onLo, 'vxlan', { last: kept, log });
    expect(again).toEqual(kept);
    expect(warnings).toEqual(['no way out of the node found now: keeping the pod MTU found before']);
    expect(missing.state.routeListings).toBe(0);
    expect(await detectMtu(host({ 4: single }).h, onLo, 'vxlan', { last: again, log })).toMatchObject({
      mtu: 1450,
      source: 'ens5 (default route) minus 50 bytes of encapsulation',
    });
  });

  it('nothing to keep: 1500 is assumed, and said once', async () => {
    const { log, warnings } = logger();
    const initial = { mtu: 1500, source: 'not detected yet', overhead: 0, fallback: true as const };
    const first = await detectMtu(host({}).h, onLo, 'vxlan', { last: initial, log });
    expect(first).toEqual({
      mtu: 1450,
      overhead: 50,
      source: 'fallback 1500 minus 50 bytes of encapsulation',
      fallback: true,
    });
    await detectMtu(host({}).h, onLo, 'vxlan', { last: first, log });
    expect(warnings).toEqual([
      'no way out of the node found: the pod MTU assumes 1500 (set --mtu if the network differs)',
    ]);
  });

  it('a lookup the kernel refuses (no IPv6: EOPNOTSUPP) is no way out for that family, never a failed pass', async () => {
    const x = host({ 4: single });
    const refusing = Object.assign(Object.create(x.h) as NetlinkHandle, {
      routeTo: async (address: string) => {
        if (address.includes(':'))
          throw Object.assign(new Error('RTM_GETROUTE: EOPNOTSUPP'), { errno: 'EOPNOTSUPP' });
        return single;
      },
    });
    const standalone = { name: 'n1', podCIDRs: [], internalIPs: [] };
    expect(await detectMtu(refusing, standalone, 'host-gw')).toMatchObject({
      mtu: 1500,
      source: 'ens5 (default route)',
    });
  });

  it('looks up the families of the InternalIPs, both without any', async () => {
    const x = host({ 6: { family: 6, dst: '::/0', ifindexes: [4] } });
    expect(
      await detectMtu(x.h, { name: 'n1', podCIDRs: [], internalIPs: ['fd00::9'] }, 'host-gw'),
    ).toMatchObject({
      mtu: 1400,
    });
    expect(x.state.lookups).toEqual(['2001:4860:4860::8888']);
    const y = host({ 4: single });
    expect(await detectMtu(y.h, { name: 'n1', podCIDRs: [], internalIPs: [] }, 'host-gw')).toMatchObject({
      mtu: 1500,
      source: 'ens5 (default route)',
    });
    expect(y.state.lookups).toEqual(['8.8.8.8', '2001:4860:4860::8888']);
  });
});
