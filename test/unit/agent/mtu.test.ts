import { describe, expect, it } from 'vitest';
import { chooseMtu } from '../../../pkg/agent/mtu.ts';
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
  const defaults = [{ family: 4 as const, dst: '0.0.0.0/0', ifindex: 3 }];

  it('an explicit setting wins', () => {
    expect(
      chooseMtu({
        configured: 1400,
        internalIPs: ['10.0.0.5'],
        localLinks,
        links,
        defaultRoutes: defaults,
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
      defaultRoutes: defaults,
      overhead: 50,
    });
    expect(c.mtu).toBe(8950);
    expect(c.source).toContain('eth0');
  });

  it('falls back to the default route device, then to 1500', () => {
    expect(
      chooseMtu({ configured: 0, internalIPs: [], localLinks, links, defaultRoutes: defaults, overhead: 0 })
        .mtu,
    ).toBe(1500);
    expect(
      chooseMtu({ configured: 0, internalIPs: [], localLinks, links: [], defaultRoutes: [], overhead: 70 }),
    ).toMatchObject({
      mtu: 1430,
    });
  });
});
