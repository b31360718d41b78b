import { describe, expect, it } from 'vitest';
import { detectMtu } from '../../../pkg/agent/publication.ts';
import type { NetlinkHandle, RouteInfo } from '../../../pkg/datapath/ports.ts';

/**
 * A host with eth0 (MTU 9000) holding 192.168.1.5, ens5 (MTU 1500) behind the default route, and lo
 * holding 10.9.9.9/32 (an InternalIP announced by BGP, say).
 */
function host(): { h: NetlinkHandle; routeListings: number } {
  const state = { routeListings: 0 };
  const routes: RouteInfo[] = [
    { family: 4, dst: '0.0.0.0/0', gateway: '10.0.0.1', ifindex: 3, protocol: 4 },
    { family: 4, dst: '10.244.2.0/24', gateway: '192.168.1.6', ifindex: 2, protocol: 126 },
  ];
  const h = {
    listLinks: async () => [
      { index: 1, name: 'lo', mac: '00:00:00:00:00:00', mtu: 65536, up: true, loopback: true },
      { index: 2, name: 'eth0', mac: '', mtu: 9000, up: true },
      { index: 3, name: 'ens5', mac: '', mtu: 1500, up: true },
    ],
    listAddresses: async () => [
      { family: 4, ifindex: 1, address: '127.0.0.1', prefixLen: 8, scope: 'host' },
      { family: 4, ifindex: 1, address: '10.9.9.9', prefixLen: 32, scope: 'universe' },
      { family: 4, ifindex: 2, address: '192.168.1.5', prefixLen: 24, scope: 'universe' },
      { family: 4, ifindex: 3, address: '10.0.0.9', prefixLen: 24, scope: 'universe' },
    ],
    listRoutes: async (f: { family?: number } = {}) => {
      state.routeListings++;
      return routes.filter((r) => f.family === undefined || r.family === f.family);
    },
  } as unknown as NetlinkHandle;
  return {
    h,
    get routeListings() {
      return state.routeListings;
    },
  };
}

describe('detectMtu', () => {
  it('takes the MTU of the interface holding an InternalIP, without listing the route table', async () => {
    const x = host();
    const choice = await detectMtu(
      x.h,
      { name: 'n1', podCIDRs: [], internalIPs: ['192.168.1.5'] },
      'host-gw',
    );
    expect(choice).toMatchObject({ mtu: 9000, source: 'eth0 (InternalIP)' });
    expect(x.routeListings).toBe(0);
  });

  it('falls back to the default route’s interface when no interface holds an InternalIP', async () => {
    const x = host();
    const choice = await detectMtu(x.h, { name: 'n1', podCIDRs: [], internalIPs: ['172.16.0.9'] }, 'host-gw');
    expect(choice).toMatchObject({ mtu: 1500, source: 'ens5 (default route)' });
    expect(x.routeListings).toBe(2);
  });

  it('takes the default route’s interface, not lo’s 65536, when the InternalIP is a /32 on lo', async () => {
    const x = host();
    const choice = await detectMtu(x.h, { name: 'n1', podCIDRs: [], internalIPs: ['10.9.9.9'] }, 'auto');
    expect(choice).toMatchObject({
      mtu: 1450,
      overhead: 50,
      source: 'ens5 (default route) minus 50 bytes of encapsulation',
    });
    expect(x.routeListings).toBe(2);
  });
});
