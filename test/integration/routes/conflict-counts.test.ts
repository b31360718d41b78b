import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import {
  type ReconcileInput,
  type ReconcileReport,
  RouteReconciler,
} from '../../../pkg/routes/reconciler.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';
import { ip, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';

/**
 * A foreign route holding this node's own pod CIDR (where trellis puts its blackhole): the per-node
 * steps after a full pass report the same counts as the pass (the metrics' routes gauge reads them),
 * whether the holder is a route trellis can read or not.
 */

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

describe.skipIf(netnsSkipReason !== undefined)(
  'route counts with our pod CIDR held by a foreign route',
  () => {
    const pool = new NetnsPool();
    const handles: NetlinkHandle[] = [];
    let a: TestNetns;
    const self: PeerNode = { name: 'node-a', podCIDRs: ['10.244.0.0/24'], internalIPs: ['192.168.77.1'] };
    const p1: PeerNode = { name: 'p1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['192.168.77.2'] };
    const input = (ps: PeerNode[]): ReconcileInput => ({ synced: true, self, peers: [self, ...ps] });
    const programmed = (r: ReconcileReport): number => r.added + r.replaced + r.unchanged;

    beforeAll(() => {
      [a] = pool.addLinkedPair('cc');
      ip(a.name, 'addr', 'add', '192.168.77.1/24', 'dev', 'eth0');
    });
    afterAll(() => {
      for (const h of handles.splice(0)) h.close();
      pool.cleanup();
    });

    it.each([
      ['an unreachable route (unreadable)', ['unreachable', '10.244.0.0/24'], true],
      ['a device route (readable)', ['10.244.0.0/24', 'dev', 'eth0'], undefined],
    ] as const)(
      'held by %s: a later per-node step counts as the full pass did',
      async (_, holder, unreadable) => {
        ip(a.name, 'route', 'add', ...holder, 'proto', 'static');
        const h = port!.openNetlinkIn(a.path);
        handles.push(h);
        try {
          const r = new RouteReconciler({ handle: h });
          const full = await r.reconcile(input([p1]));
          expect(full.errors).toEqual([]);
          expect(full.conflicts.map((c) => [c.desired.dst, c.existing.unreadable])).toEqual([
            ['10.244.0.0/24', unreadable],
          ]);
          expect(programmed(full)).toBe(1); // p1's route; the blackhole is held from us
          const moved = { ...p1, internalIPs: ['192.168.77.3'] };
          const step = await r.reconcilePeer(moved.name, moved);
          if (step.kind !== 'applied')
            throw new Error(`expected a per-node step, got ${JSON.stringify(step)}`);
          const folded = step.report();
          expect(programmed(folded)).toBe(1);
          expect(folded.conflicts).toHaveLength(1);
        } finally {
          ip(a.name, 'route', 'del', '10.244.0.0/24', 'proto', 'static');
          // Deleting our nexthop objects takes their routes (`ip route flush` refuses routes naming one).
          ip(a.name, 'nexthop', 'flush', 'protocol', '126');
        }
      },
    );
  },
);

describe.skipIf(netnsSkipReason !== undefined)('an IPv6 route in front of ours (a lower metric)', () => {
  const pool = new NetnsPool();
  const handles: NetlinkHandle[] = [];
  let a: TestNetns;
  const self: PeerNode = { name: 'node-a', podCIDRs: ['fd00:10:244::/64'], internalIPs: ['fd00:77::1'] };
  const p1: PeerNode = { name: 'p1', podCIDRs: ['fd00:10:244:1::/64'], internalIPs: ['fd00:77::2'] };
  const input = (ps: PeerNode[]): ReconcileInput => ({ synced: true, self, peers: [self, ...ps] });

  beforeAll(() => {
    [a] = pool.addLinkedPair('cm');
    ip(a.name, 'addr', 'add', 'fd00:77::1/64', 'dev', 'eth0', 'nodad');
  });
  afterAll(() => {
    for (const h of handles.splice(0)) h.close();
    pool.cleanup();
  });

  // IPv6 keys a route by its metric too, so the kernel takes a holder at metric 100 beside ours at 1024
  // (no EEXIST), and the holder wins the lookup: the pass must see it in its dump to report it.
  it.each([
    ['a readable one', ['fd00:10:244:1::/64', 'via', 'fd00:77::9', 'dev', 'eth0'], undefined],
    ['a prohibit route (unreadable)', ['prohibit', 'fd00:10:244:1::/64'], true],
  ] as const)('%s is reported as a conflict', async (_, holder, unreadable) => {
    const h = port!.openNetlinkIn(a.path);
    handles.push(h);
    const r = new RouteReconciler({ handle: h });
    expect((await r.reconcile(input([p1]))).errors).toEqual([]);
    ip(a.name, '-6', 'route', 'add', ...holder, 'metric', '100', 'proto', 'static');
    try {
      const rep = await r.reconcile(input([p1]));
      expect(rep.quiet).toBeUndefined();
      expect(rep.conflicts.map((c) => [c.desired.dst, c.existing.protocol, c.existing.unreadable])).toEqual([
        ['fd00:10:244:1::/64', 4, unreadable],
      ]);
    } finally {
      ip(a.name, '-6', 'route', 'del', 'fd00:10:244:1::/64', 'metric', '100');
    }
  });
});
