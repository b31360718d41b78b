import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { type ReconcileInput, RouteReconciler } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';
import { ip, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';
import { clearKey, nodeWithAddress, routesOnKey } from './peer-key.ts';

/**
 * A per-node step that moves a peer's route to its new InternalIP replaces the route in place. The
 * route it replaces must still be ours: a route someone else put on the key since the last full pass
 * (a routing daemon whose protocol the kernel watch filters out, or one inside the watch's debounce)
 * is left alone, and the full pass the step falls back to reports it as a conflict.
 */

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

interface Family {
  name: string;
  flag: '-4' | '-6';
  self: PeerNode;
  peer: PeerNode;
  moved: string;
  foreignVia: string;
}

const FAMILIES: Family[] = [
  {
    name: 'IPv4',
    flag: '-4',
    self: { name: 'node-a', podCIDRs: ['10.244.0.0/24'], internalIPs: ['192.168.78.1'] },
    peer: { name: 'p1', podCIDRs: ['10.244.1.0/24'], internalIPs: ['192.168.78.2'] },
    moved: '192.168.78.3',
    foreignVia: '192.168.78.9',
  },
  {
    name: 'IPv6',
    flag: '-6',
    self: { name: 'node-a', podCIDRs: ['fd00:10:244::/64'], internalIPs: ['fd00:78::1'] },
    peer: { name: 'p1', podCIDRs: ['fd00:10:244:1::/64'], internalIPs: ['fd00:78::2'] },
    moved: 'fd00:78::3',
    foreignVia: 'fd00:78::9',
  },
];

describe.skipIf(netnsSkipReason !== undefined).each(FAMILIES)(
  'a per-node step replacing a peer route ($name)',
  (f) => {
    const pool = new NetnsPool();
    const handles: NetlinkHandle[] = [];
    let a: TestNetns;
    const key = f.peer.podCIDRs[0]!;
    const input = (ps: PeerNode[]): ReconcileInput => ({
      synced: true,
      self: f.self,
      peers: [f.self, ...ps],
    });
    const moved: PeerNode = { ...f.peer, internalIPs: [f.moved] };
    /** The routes on the peer's key: "via GATEWAY proto PROTOCOL" (nexthop objects resolved). */
    const onKey = (): string[] =>
      routesOnKey(a, f.flag, key).map(
        (r) => `${r.type === 'unicast' ? `via ${r.via}` : r.type} proto ${r.protocol}`,
      );

    beforeAll(() => {
      a = nodeWithAddress(pool, 'pr', f.flag, f.self.internalIPs[0]!);
    });
    afterAll(() => {
      for (const h of handles.splice(0)) h.close();
      pool.cleanup();
    });

    const reconciler = async (): Promise<RouteReconciler> => {
      const h = port!.openNetlinkIn(a.path);
      handles.push(h);
      const r = new RouteReconciler({ handle: h });
      expect((await r.reconcile(input([f.peer]))).errors).toEqual([]);
      expect(onKey()).toEqual([`via ${f.peer.internalIPs[0]} proto 126`]);
      return r;
    };
    const cleanUp = (): void => clearKey(a, f.flag, key);

    it('ours on the key: replaced in place by the step, no full pass', async () => {
      const r = await reconciler();
      try {
        const step = await r.reconcilePeer(moved.name, moved);
        expect(step.kind, JSON.stringify(step)).toBe('applied');
        expect(onKey()).toEqual([`via ${f.moved} proto 126`]);
      } finally {
        cleanUp();
      }
    });

    it('a policy rule sends the lookup to another table first: not plain to see, a full pass moves it', async () => {
      const r = await reconciler();
      const other = f.flag === '-4' ? '192.168.78.7' : 'fd00:78::7';
      ip(a.name, f.flag, 'route', 'add', 'default', 'via', other, 'table', '100');
      // Only for the key's addresses: the new gateway itself still resolves through main.
      ip(a.name, f.flag, 'rule', 'add', 'pref', '10', 'to', key, 'lookup', '100');
      try {
        const step = await r.reconcilePeer(moved.name, moved);
        expect(step).toEqual({ kind: 'full', reason: expect.stringContaining('of table 100 answers for') });
        const full = await r.reconcile(input([moved]));
        expect(full.errors.map((e) => String(e.error))).toEqual([]);
        expect(onKey()).toEqual([`via ${f.moved} proto 126`]);
      } finally {
        ip(a.name, f.flag, 'rule', 'del', 'pref', '10');
        ip(a.name, f.flag, 'route', 'flush', 'table', '100');
        cleanUp();
      }
    });

    it.each([
      [
        'a gateway route',
        ['via', f.foreignVia, 'dev', 'eth0'],
        `via ${f.foreignVia} proto static`,
        'held by a route of protocol 4',
      ],
      ['a blackhole', ['blackhole'], 'blackhole proto static', 'cannot tell what holds the key'],
    ] as const)(
      'someone else’s %s took the key: left alone, the full pass reports it',
      async (_, holder, shown, why) => {
        const r = await reconciler();
        try {
          // Behind the reconciler's back, as a routing daemon the kernel watch filters out would.
          const spec = holder[0] === 'blackhole' ? ['blackhole', key] : [key, ...holder];
          ip(a.name, f.flag, 'route', 'replace', ...spec, 'proto', 'static');
          expect(onKey()).toEqual([shown]);
          const step = await r.reconcilePeer(moved.name, moved);
          expect(step).toEqual({ kind: 'full', reason: expect.stringContaining(why) });
          expect(onKey()).toEqual([shown]);
          const full = await r.reconcile(input([moved]));
          expect(full.conflicts.map((c) => [c.desired.dst, c.existing.protocol])).toEqual([[key, 4]]);
          expect(onKey()).toEqual([shown]);
        } finally {
          cleanUp();
        }
      },
    );
  },
);
