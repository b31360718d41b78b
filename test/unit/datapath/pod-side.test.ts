import { describe, expect, it } from 'vitest';
import { podSideSteps } from '../../../pkg/datapath/pod-side.ts';

const v4 = { family: 4 as const, address: '10.244.1.5', range: '10.244.1.0/24' };
const v6 = { family: 6 as const, address: 'fd00:10:244:1::5', range: 'fd00:10:244:1::/64' };
const routes = [
  { family: 4 as const, dst: '0.0.0.0/0', gateway: '169.254.1.1', mtu: 1450 },
  { family: 6 as const, dst: '::/0', gateway: 'fe80::1' },
];

describe('podSideSteps', () => {
  it("gives a dual-stack pod its interface up, host-length addresses, the IPv4 gateway's link route, then the default routes", () => {
    const { steps, firstRouteStep } = podSideSteps({ index: 3, loopback: 1, addresses: [v4, v6], routes });
    expect(steps).toEqual([
      { kind: 'up', index: 1 },
      { kind: 'up', index: 3 },
      {
        kind: 'address',
        address: { family: 4, ifindex: 3, address: '10.244.1.5', prefixLen: 32, noDad: false },
      },
      {
        kind: 'address',
        address: { family: 6, ifindex: 3, address: 'fd00:10:244:1::5', prefixLen: 128, noDad: true },
      },
      {
        kind: 'route',
        route: { family: 4, dst: '169.254.1.1/32', ifindex: 3, scope: 'link' },
        keepExisting: true,
      },
      {
        kind: 'route',
        route: { family: 4, dst: '0.0.0.0/0', gateway: '169.254.1.1', ifindex: 3, onlink: true, mtu: 1450 },
        keepExisting: true,
      },
      {
        kind: 'route',
        route: { family: 6, dst: '::/0', gateway: 'fe80::1', ifindex: 3 },
        keepExisting: true,
      },
    ]);
    expect(firstRouteStep).toBe(5);
  });

  it('renames a prepared pod end first, leaves loopback alone when it is up, and an IPv6-only pod has no IPv4 link route', () => {
    const { steps, firstRouteStep } = podSideSteps({
      index: 7,
      loopback: undefined,
      rename: { ifname: 'eth0', mtu: 1500 },
      addresses: [v6],
      routes: routes.slice(1),
    });
    expect(steps.map((s) => s.kind)).toEqual(['link', 'up', 'address', 'route']);
    expect(steps[0]).toEqual({ kind: 'link', index: 7, name: 'eth0', mtu: 1500 });
    expect(firstRouteStep).toBe(3);
  });
});
