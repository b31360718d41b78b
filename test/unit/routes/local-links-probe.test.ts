import { describe, expect, it } from 'vitest';
import type { AddressInfo, LinkInfo, NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { readLocalLinks } from '../../../pkg/routes/local-links.ts';

/**
 * Which host-length addresses readLocalLinks asks the kernel about (one route lookup each, for an
 * on-link prefix around them): a node's /128 on its uplink, never a VIP on lo or on a dummy device.
 * kube-proxy's IPVS mode puts every Service's ClusterIP on its dummy kube-ipvs0 (this kernel has no
 * dummy devices, so the handle is a small stand-in: the lookups are what is counted).
 */
describe('readLocalLinks: on-link lookups', () => {
  const link = (index: number, name: string, kind: string | undefined, loopback = false): LinkInfo => ({
    index,
    name,
    kind,
    mac: '',
    mtu: 1500,
    up: true,
    ...(loopback ? { loopback: true as const } : {}),
  });
  const addr = (ifindex: number, address: string, prefixLen: number): AddressInfo => ({
    family: address.includes(':') ? 6 : 4,
    ifindex,
    address,
    prefixLen,
    scope: 'universe',
  });

  it('looks up the uplink host-length address only, not the ClusterIPs on kube-ipvs0 or a /32 on lo', async () => {
    const links = [
      link(1, 'lo', undefined, true),
      link(2, 'eth0', undefined),
      link(3, 'kube-ipvs0', 'dummy'),
    ];
    const services = Array.from({ length: 500 }, (_, i) => addr(3, `10.96.${i >> 8}.${i & 255}`, 32));
    const addresses = [addr(1, '192.0.2.10', 32), addr(2, '2001:db8:5::a', 128), ...services];
    const asked: string[] = [];
    const handle = {
      listLinks: async () => links,
      listAddresses: async () => addresses,
      routeTo: async (dst: string) => {
        asked.push(dst);
        return undefined;
      },
    } as unknown as NetlinkHandle;
    const local = await readLocalLinks(handle);
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatch(/^2001:db8:5::/);
    expect(local.find((l) => l.name === 'kube-ipvs0')?.addresses).toHaveLength(500);
  });
});
