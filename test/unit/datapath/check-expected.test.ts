import { describe, expect, it } from 'vitest';
import { expectedFromResult } from '../../../pkg/datapath/check.ts';

describe('expectedFromResult: what CHECK looks for, read from a prevResult', () => {
  const result = (ips: string[], routes: string[]) => ({
    cniVersion: '1.0.0',
    interfaces: [{ name: 'trl0' }, { name: 'eth0', sandbox: '/var/run/netns/p' }],
    ips: ips.map((address) => ({ address, interface: 1 })),
    routes: routes.map((dst) => ({ dst })),
  });

  it('reads addresses and default routes as the kernel lists them, whatever their spelling', () => {
    const got = expectedFromResult(
      result(['10.244.1.5/32', 'FD00:10:244:1:0:0:0:2/128'], ['0.0.0.0/0', '::0/0']),
      'eth0',
    );
    expect(got.ips).toEqual(['10.244.1.5/32', 'fd00:10:244:1::2/128']);
    expect(got.defaultRoutes).toEqual([4, 6]);
  });

  it("a default route through another gateway (a later plugin's, route-override's) is not looked for", () => {
    const prev = {
      ...result([], []),
      routes: [
        { dst: '0.0.0.0/0', gw: '10.0.0.1' },
        { dst: '::/0', gw: 'FE80::1' },
      ],
    };
    expect(expectedFromResult(prev, 'eth0')).toMatchObject({
      defaultRoutes: [6],
      gatewayRoutes: [{ family: 6, dst: '::/0' }],
    });
  });

  it('keeps text it cannot read as it is (CHECK then reports it as not found)', () => {
    const got = expectedFromResult(result(['not-an-address', '10.0.0.300/32'], ['10.0.0.0/8']), 'eth0');
    expect(got.ips).toEqual(['not-an-address', '10.0.0.300/32']);
    expect(got.defaultRoutes).toEqual([]);
  });

  it('only the pod interface: addresses of other interfaces are not looked for', () => {
    const prev = result(['10.244.1.5/32'], []);
    prev.ips.push({ address: '192.0.2.7/24', interface: 0 });
    expect(expectedFromResult(prev, 'eth0').ips).toEqual(['10.244.1.5/32']);
  });

  it("keeps the routes through trellis's gateways with their MTUs, and the pod interface's MTU", () => {
    const got = expectedFromResult(
      {
        cniVersion: '1.1.0',
        interfaces: [{ name: 'trl0' }, { name: 'eth0', mtu: 1500, sandbox: '/var/run/netns/p' }],
        routes: [
          { dst: '0.0.0.0/0', gw: '169.254.1.1', mtu: 1450 },
          { dst: '10.244.1.0/24', gw: '169.254.1.1' },
          { dst: 'FD00:10:244:1::/64', gw: 'FE80::1', mtu: 0 },
          // Another plugin's routes are its own to check.
          { dst: '198.51.100.0/24', gw: '192.0.2.1' },
          { dst: '203.0.113.0/24' },
        ],
      },
      'eth0',
    );
    expect(got.gatewayRoutes).toEqual([
      { family: 4, dst: '0.0.0.0/0', mtu: 1450 },
      { family: 4, dst: '10.244.1.0/24' },
      { family: 6, dst: 'fd00:10:244:1::/64' },
    ]);
  });
});
