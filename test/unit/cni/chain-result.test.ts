import { describe, expect, it } from 'vitest';
import { appendToPrevResult } from '../../../pkg/cni/chain-result.ts';
import type { CniResult } from '../../../pkg/cni/result.ts';

const own: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'trl0' }, { name: 'eth0', sandbox: '/run/netns/p' }],
  ips: [{ address: '10.244.1.5/32', gateway: '169.254.1.1', interface: 1 }],
  routes: [{ dst: '0.0.0.0/0', gw: '169.254.1.1' }],
};

describe('appendToPrevResult', () => {
  it('is our result alone when there is no previous one', () => {
    expect(appendToPrevResult(undefined, own)).toBe(own);
  });

  it('keeps the previous result first and moves our interface indexes past its interfaces', () => {
    const prev: CniResult = {
      cniVersion: '1.1.0',
      interfaces: [{ name: 'a' }, { name: 'b', sandbox: '/run/netns/p' }],
      ips: [{ address: '192.0.2.2/24', interface: 1 }, { address: '192.0.2.3/24' }],
      routes: [{ dst: '198.51.100.0/24' }],
    };
    expect(appendToPrevResult(prev, own)).toEqual({
      cniVersion: '1.1.0',
      interfaces: [{ name: 'a' }, { name: 'b', sandbox: '/run/netns/p' }, ...own.interfaces!],
      ips: [
        { address: '192.0.2.2/24', interface: 1 },
        { address: '192.0.2.3/24' },
        { address: '10.244.1.5/32', gateway: '169.254.1.1', interface: 3 },
      ],
      routes: [{ dst: '198.51.100.0/24' }, { dst: '0.0.0.0/0', gw: '169.254.1.1' }],
    });
    expect(own.ips![0]!.interface).toBe(1); // ours is not modified
  });

  it("keeps the previous dns unless the network's own says something", () => {
    const prev: CniResult = { cniVersion: '1.1.0', dns: { nameservers: ['192.0.2.53'] } };
    expect(appendToPrevResult(prev, own).dns).toEqual({ nameservers: ['192.0.2.53'] });
    expect(appendToPrevResult(prev, { ...own, dns: {} }).dns).toEqual({ nameservers: ['192.0.2.53'] });
    expect(appendToPrevResult(prev, { ...own, dns: { search: ['svc'] } }).dns).toEqual({ search: ['svc'] });
  });

  it('omits lists that stay empty', () => {
    expect(appendToPrevResult({ cniVersion: '1.1.0' }, { cniVersion: '1.1.0' })).toEqual({
      cniVersion: '1.1.0',
    });
  });
});
