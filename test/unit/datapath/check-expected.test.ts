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
});
