import { describe, expect, it } from 'vitest';
import {
  HOLD_MS,
  heldAddressOf,
  heldReason,
  holdAbsentInternalIPs,
} from '../../../pkg/routes/absent-internal-ip.ts';
import type { LocalLink, SelfNode } from '../../../pkg/routes/types.ts';

const self: SelfNode = {
  name: 'n1',
  podCIDRs: ['10.244.1.0/24'],
  internalIPs: ['192.168.10.2', 'fd00:10::2'],
};
const eth0 = (addresses: LocalLink['addresses']): LocalLink => ({ ifindex: 2, name: 'eth0', addresses });
const v4 = { family: 4 as const, address: '192.168.10.2', prefixLen: 24 };
const v6 = { family: 6 as const, address: 'fd00:10::2', prefixLen: 64 };
const T0 = 1_000_000;

describe('holdAbsentInternalIPs', () => {
  it('records where each InternalIP is and changes nothing while all are there', () => {
    const links = [eth0([v4, v6])];
    const out = holdAbsentInternalIPs(self, links, [], T0);
    expect(out.links).toEqual(links);
    expect(out.held).toEqual([]);
    expect(out.problems).toEqual([]);
    expect(out.homes).toEqual([
      { ifindex: 2, linkName: 'eth0', address: v4 },
      { ifindex: 2, linkName: 'eth0', address: v6 },
    ]);
  });

  it('puts an absent one back on the link that had it, says so, and holds it for HOLD_MS from the first pass that missed it', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], [], T0);
    const off = holdAbsentInternalIPs(self, [eth0([v6])], homes, T0 + 10);
    expect(off.links).toEqual([eth0([v6, v4])]);
    expect(off.held).toEqual([{ ifindex: 2, linkName: 'eth0', address: v4, absentSince: T0 + 10 }]);
    expect(off.problems).toEqual([
      {
        node: 'n1',
        problem: `InternalIP 192.168.10.2 is not an address of this node's interfaces: routes are planned as when it was on eth0 (192.168.10.0/24) for up to ${HOLD_MS / 1000} s, and those through that subnet wait for it`,
      },
    ]);
    const still = holdAbsentInternalIPs(self, [eth0([v6])], off.homes, T0 + 10 + HOLD_MS - 1);
    expect(still.held).toEqual(off.held);
    // The hold ends: the links as they are, and nothing held at the passes after.
    const over = holdAbsentInternalIPs(self, [eth0([v6])], still.homes, T0 + 10 + HOLD_MS);
    expect(over.held).toEqual([]);
    expect(over.links).toEqual([eth0([v6])]);
    expect(holdAbsentInternalIPs(self, [eth0([v6])], over.homes, T0 + 10 + HOLD_MS + 1).held).toEqual([]);
    // Back, then gone again: a new hold.
    const back = holdAbsentInternalIPs(self, [eth0([v4, v6])], over.homes, T0 + 2 * HOLD_MS);
    expect(back.held).toEqual([]);
    expect(holdAbsentInternalIPs(self, [eth0([v6])], back.homes, T0 + 3 * HOLD_MS).held).toHaveLength(1);
  });

  it('holds nothing without a last place, when the link is gone or renamed, or when the Node lists another IP', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], [], T0);
    expect(holdAbsentInternalIPs(self, [eth0([v6])], [], T0).held).toEqual([]);
    expect(
      holdAbsentInternalIPs(self, [{ ifindex: 7, name: 'eth0', addresses: [v6] }], homes, T0).held,
    ).toEqual([]);
    expect(
      holdAbsentInternalIPs(self, [{ ifindex: 2, name: 'ens3', addresses: [v6] }], homes, T0).held,
    ).toEqual([]);
    const renumbered = { ...self, internalIPs: ['192.168.10.9', 'fd00:10::2'] };
    expect(holdAbsentInternalIPs(renumbered, [eth0([v6])], homes, T0).held).toEqual([]);
  });

  it('holds nothing while another address of the link connects its subnet (a lease renumbered in place)', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], [], T0);
    const seven = { family: 4 as const, address: '192.168.10.7', prefixLen: 24 };
    expect(holdAbsentInternalIPs(self, [eth0([seven, v6])], homes, T0).held).toEqual([]);
    // A host-length address connects nothing: still held.
    const host = { family: 4 as const, address: '192.168.10.7', prefixLen: 32 };
    expect(holdAbsentInternalIPs(self, [eth0([host, v6])], homes, T0).held).toHaveLength(1);
  });

  it('an InternalIP moved to another link is found there, not held', () => {
    const { homes } = holdAbsentInternalIPs(self, [eth0([v4, v6])], [], T0);
    const bond: LocalLink = { ifindex: 9, name: 'bond0', addresses: [v4] };
    const out = holdAbsentInternalIPs(self, [eth0([v6]), bond], homes, T0);
    expect(out.held).toEqual([]);
    expect(out.homes[0]).toEqual({ ifindex: 9, linkName: 'bond0', address: v4 });
  });
});

describe('heldAddressOf', () => {
  const held = [{ ifindex: 2, linkName: 'eth0', address: v4, absentSince: T0 }];
  const links = [eth0([v6])];
  const via = (gateway: string | undefined, ifindex = 2) => ({
    family: 4 as const,
    dst: '10.244.3.0/24',
    ifindex,
    ...(gateway === undefined ? {} : { gateway }),
  });
  it('is the held address whose subnet on its link holds the gateway, while no address of the link reaches it', () => {
    expect(heldAddressOf(via('192.168.10.3'), held, links)).toEqual(held[0]);
    expect(heldAddressOf(via('192.168.11.3'), held, links)).toBeUndefined();
    expect(heldAddressOf(via('192.168.10.3', 3), held, links)).toBeUndefined();
    expect(heldAddressOf(via(undefined), held, links)).toBeUndefined();
    expect(
      heldAddressOf({ family: 6, dst: 'fd00:244:3::/64', gateway: 'fd00:10::3', ifindex: 2 }, held, links),
    ).toBeUndefined();
    // The link reaches the gateway through another address (a /25 of the same subnet): no wait.
    const part = [eth0([{ family: 4, address: '192.168.10.130', prefixLen: 25 }, v6])];
    expect(heldAddressOf(via('192.168.10.131'), held, part)).toBeUndefined();
    expect(heldAddressOf(via('192.168.10.3'), held, part)).toEqual(held[0]);
    expect(heldReason(held[0]!)).toBe(
      `waits for this node's InternalIP 192.168.10.2 back on eth0 (up to ${HOLD_MS / 1000} s)`,
    );
  });
});
