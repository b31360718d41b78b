import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetlinkHandle } from '../../../pkg/datapath/ports.ts';
import { createNetnsPort } from '../../../pkg/netns/index.ts';
import { type ReconcileInput, RouteReconciler } from '../../../pkg/routes/reconciler.ts';
import type { PeerNode } from '../../../pkg/routes/types.ts';
import { ip, NetnsPool, netnsSkipReason, type TestNetns } from '../../support/netns.ts';
import { clearKey, nodeWithAddress, routesOnKey } from './peer-key.ts';

/**
 * Someone else's route on a peer's prefix at a higher metric than ours sits beside ours on another
 * kernel key and loses every lookup to it: it is no conflict. When the peer's InternalIP changes, ours
 * follows (per-node step and full pass alike) and theirs is left as it was.
 */

const port = netnsSkipReason === undefined ? createNetnsPort() : undefined;

interface Family {
  name: string;
  flag: '-4' | '-6';
  self: PeerNode;
  peer: PeerNode;
  moved: string;
  foreignVia: string;
  /** Ours is 0 (IPv4) or 1024 (IPv6): theirs is behind it. */
  foreignMetric: string;
}

const FAMILIES: Family[] = [
  {
    name: 'IPv4',
    flag: '-4',
    self: { name: 'node-a', podCIDRs: ['10.244.0.0/24'], internalIPs: ['192.168.79.1'] },
    peer: { name: 'ph-h6', podCIDRs: ['10.244.152.0/24'], internalIPs: ['192.168.79.152'] },
    moved: '192.168.79.153',
    foreignVia: '192.168.79.9',
    foreignMetric: '100',
  },
  {
    name: 'IPv6',
    flag: '-6',
    self: { name: 'node-a', podCIDRs: ['fd00:10:244::/64'], internalIPs: ['fd00:79::1'] },
    peer: { name: 'ph-h6', podCIDRs: ['fd00:10:244:98::/64'], internalIPs: ['fd00:79::152'] },
    moved: 'fd00:79::153',
    foreignVia: 'fd00:79::9',
    foreignMetric: '2000',
  },
];

describe.skipIf(netnsSkipReason !== undefined).each(FAMILIES)(
  'a foreign route behind ours on a peer prefix ($name)',
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
    const theirs = `via ${f.foreignVia} proto static metric ${f.foreignMetric}`;
    const ours = (via: string): string => `via ${via} proto 126 metric ${f.flag === '-4' ? 0 : 1024}`;
    /** The routes on the peer's prefix, in lookup order (nexthop objects resolved). */
    const onKey = (): string[] =>
      routesOnKey(a, f.flag, key).map((r) => `via ${r.via} proto ${r.protocol} metric ${r.metric}`);

    beforeAll(() => {
      a = nodeWithAddress(pool, 'fm', f.flag, f.self.internalIPs[0]!);
    });
    afterAll(() => {
      for (const h of handles.splice(0)) h.close();
      pool.cleanup();
    });

    const setUp = async (): Promise<RouteReconciler> => {
      const h = port!.openNetlinkIn(a.path);
      handles.push(h);
      const r = new RouteReconciler({ handle: h });
      expect((await r.reconcile(input([f.peer]))).errors).toEqual([]);
      ip(
        a.name,
        f.flag,
        'route',
        'add',
        key,
        'via',
        f.foreignVia,
        'proto',
        'static',
        'metric',
        f.foreignMetric,
      );
      expect(onKey()).toEqual([ours(f.peer.internalIPs[0]!), theirs]);
      // The pass the kernel watch would run: nothing to report, nothing to change.
      const rep = await r.reconcile(input([f.peer]));
      expect([rep.conflicts, rep.added + rep.replaced + rep.removed]).toEqual([[], 0]);
      return r;
    };
    const cleanUp = (): void => clearKey(a, f.flag, key);

    it('the InternalIP changes: a per-node step replaces ours, theirs stays', async () => {
      const r = await setUp();
      try {
        const step = await r.reconcilePeer(moved.name, moved);
        expect(step.kind, JSON.stringify(step)).toBe('applied');
        expect(onKey()).toEqual([ours(f.moved), theirs]);
        // And the next full pass agrees: the kernel holds what the steps left.
        const rep = await r.reconcile(input([moved]));
        expect([rep.conflicts, rep.quiet]).toEqual([[], true]);
      } finally {
        cleanUp();
      }
    });

    it('the InternalIP changes: a full pass replaces ours, theirs stays; the peer gone, ours goes', async () => {
      await setUp();
      const h = port!.openNetlinkIn(a.path);
      handles.push(h);
      const fresh = new RouteReconciler({ handle: h }); // a restarted agent: no state, a full diff
      try {
        const rep = await fresh.reconcile(input([moved]));
        expect([rep.conflicts, rep.replaced, rep.errors]).toEqual([[], 1, []]);
        expect(onKey()).toEqual([ours(f.moved), theirs]);
        const gone = await fresh.reconcile(input([]));
        expect([gone.conflicts, gone.removed, gone.errors]).toEqual([[], 1, []]);
        expect(onKey()).toEqual([theirs]);
      } finally {
        cleanUp();
      }
    });
  },
);
