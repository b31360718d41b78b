import { describe, expect, it } from 'vitest';
import { holdAbsentInternalIPs, waitsForHeldAddress } from '../../../pkg/routes/absent-internal-ip.ts';
import type { LocalLink, SelfNode } from '../../../pkg/routes/types.ts';

const self: SelfNode = {
  name: 'n1',
  podCIDRs: ['10.244.1.0/24'],
  internalIPs: ['192.168.10.2', 'fd00:10::2'],
};
const eth0 = (addresses: LocalLink['addresses']): LocalLink => ({ ifindex: 2, name: 'eth0', addresses });
const v4 = { family: 4 as const, address: '192.168.10.2', prefixLen: 24 };
const v6 = { family: 6 as const, address: 'fd00:10::2', prefixLen: 64 };

describe('holdAbsentInternalIPs', () => {
  it('records where each InternalIP is and changes nothing while all are there', () => {
    const links = [eth0([v4, v6])];
    const out = holdAbsentInternalIPs(self, links, []);
    expect(out.links).toEqual(links);
    expect(out.held).toEqual([]);
    expect(out.problems).toEqual([]);
    expect(out.homes).toEqual([
      { ifindex: 2, linkName: 'eth0', address: v4 },
      { ifindex: 2, linkName: 'eth0', address: v6 },
    ]);
  });

  it('puts an absent one back on the link that had it, says so, and keeps holding it', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], []);
    const off = holdAbsentInternalIPs(self, [eth0([v6])], homes);
    expect(off.links).toEqual([eth0([v6, v4])]);
    expect(off.held).toEqual([{ ifindex: 2, linkName: 'eth0', address: v4 }]);
    expect(off.problems).toEqual([
      {
        node: 'n1',
        problem:
          "InternalIP 192.168.10.2 is not an address of this node's interfaces: routes are planned as when it was on eth0 (192.168.10.0/24), and those through that subnet wait until it is back",
      },
    ]);
    const still = holdAbsentInternalIPs(self, [eth0([v6])], off.homes);
    expect(still.held).toEqual(off.held);
    const back = holdAbsentInternalIPs(self, [eth0([v4, v6])], still.homes);
    expect(back.held).toEqual([]);
  });

  it('holds nothing without a last place, when the link is gone or renamed, or when the Node lists another IP', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], []);
    expect(holdAbsentInternalIPs(self, [eth0([v6])], []).held).toEqual([]);
    expect(holdAbsentInternalIPs(self, [{ ifindex: 7, name: 'eth0', addresses: [v6] }], homes).held).toEqual(
      [],
    );
    expect(holdAbsentInternalIPs(self, [{ ifindex: 2, name: 'ens3', addresses: [v6] }], homes).held).toEqual(
      [],
    );
    const renumbered = { ...self, internalIPs: ['192.168.10.9', 'fd00:10::2'] };
    expect(holdAbsentInternalIPs(renumbered, [eth0([v6])], homes).held).toEqual([]);
  });

  it('an InternalIP moved to another link is found there, not held', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], []);
    const bond: LocalLink = { ifindex: 9, name: 'bond0', addresses: [v4] };
    const out = holdAbsentInternalIPs(self, [eth0([v6]), bond], homes);
    expect(out.held).toEqual([]);
    expect(out.homes[0]).toEqual({ ifindex: 9, linkName: 'bond0', address: v4 });
  });
});

describe('waitsForHeldAddress', () => {
  const held = [{ ifindex: 2, linkName: 'eth0', address: v4 }];
  it('is a route through a gateway on the held subnet and link', () => {
    expect(
      waitsForHeldAddress({ family: 4, dst: '10.244.3.0/24', gateway: '192.168.10.3', ifindex: 2 }, held),
    ).toBe(true);
    expect(
      waitsForHeldAddress({ family: 4, dst: '10.244.3.0/24', gateway: '192.168.11.3', ifindex: 2 }, held),
    ).toBe(false);
    expect(
      waitsForHeldAddress({ family: 4, dst: '10.244.3.0/24', gateway: '192.168.10.3', ifindex: 3 }, held),
    ).toBe(false);
    expect(waitsForHeldAddress({ family: 4, dst: '10.244.3.0/24', ifindex: 2 }, held)).toBe(false);
    expect(
      waitsForHeldAddress({ family: 6, dst: 'fd00:244:3::/64', gateway: 'fd00:10::3', ifindex: 2 }, held),
    ).toBe(false);
  });
});
