import { describe, expect, it } from 'vitest';
import type { LinkInfo } from '../../../pkg/datapath/ports.ts';
import { nodeLinkOf, wayOutLink } from '../../../pkg/routes/node-link.ts';
import type { LocalLink } from '../../../pkg/routes/types.ts';

const link = (index: number, name: string, extra: Partial<LinkInfo> = {}): LinkInfo => ({
  index,
  name,
  kind: undefined,
  mac: '',
  mtu: 1500,
  up: true,
  ...extra,
});
const links = [link(1, 'lo', { mtu: 65536, loopback: true }), link(2, 'eth0'), link(3, 'eth1')];
const local = (ifindex: number, name: string, address: string, prefixLen: number): LocalLink => ({
  ifindex,
  name,
  addresses: [{ family: address.includes(':') ? 6 : 4, address, prefixLen }],
});

describe('nodeLinkOf', () => {
  it('the link holding an InternalIP on a subnet, compared in canonical form', () => {
    const ll = [local(2, 'eth0', '10.0.0.5', 24), local(3, 'eth1', 'fd00:0:0:0::5', 64)];
    expect(nodeLinkOf(ll, ['10.0.0.5'], links)?.name).toBe('eth0');
    expect(nodeLinkOf(ll, ['fd00::5'], links)?.name).toBe('eth1');
    expect(nodeLinkOf(ll, ['10.0.0.6'], links)).toBeUndefined();
  });

  it('not a host-length address (/32, /128), not the loopback device', () => {
    expect(nodeLinkOf([local(1, 'lo', '10.9.9.9', 32)], ['10.9.9.9'], [])).toBeUndefined();
    expect(nodeLinkOf([local(2, 'eth0', 'fd00::5', 128)], ['fd00::5'], links)).toBeUndefined();
    expect(nodeLinkOf([local(1, 'lo', '10.9.9.9', 24)], ['10.9.9.9'], links)).toBeUndefined();
    // A second InternalIP on a real subnet still counts.
    const both = [local(1, 'lo', '10.9.9.9', 32), local(2, 'eth0', '10.0.0.5', 24)];
    expect(nodeLinkOf(both, ['10.9.9.9', '10.0.0.5'], links)?.name).toBe('eth0');
  });
});

describe('wayOutLink', () => {
  const all = [...links, link(4, 'eth2', { mtu: 9000 }), link(5, 'eth3', { mtu: 1400 })];
  it('the smallest MTU among the devices of the ways out (of the family when given), naming the route', () => {
    const ways = [
      { family: 6 as const, dst: '::/0', ifindexes: [3] },
      { family: 4 as const, dst: '0.0.0.0/0', ifindexes: [4, 9, 5] },
    ];
    expect(wayOutLink(ways, all)).toEqual({
      link: all[4],
      via: 'default route, smallest MTU of eth2, eth3',
    });
    expect(wayOutLink(ways, all, 6)).toEqual({ link: all[2], via: 'default route' });
    expect(wayOutLink(ways, all.slice(0, 2), 6)).toBeUndefined();
    expect(wayOutLink([], all)).toBeUndefined();
  });
});
