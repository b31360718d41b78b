import { describe, expect, it } from 'vitest';
import type { NeighbourEntry, RouteInfo } from '../../../pkg/datapath/ports.ts';
import { desiredRoutes } from '../../../pkg/routes/desired.ts';
import { routeKey } from '../../../pkg/routes/diff.ts';
import { keepsOverlayEntry } from '../../../pkg/routes/kept-entries.ts';
import { concernsPrefix, kernelHolds } from '../../../pkg/routes/kernel-check.ts';
import { OwnRouteChanges } from '../../../pkg/routes/own-changes.ts';
import {
  buildPeerState,
  changedFields,
  commitPeerStep,
  describesInputs,
  type PeerState,
  type PeerStep,
  planPeerStep,
} from '../../../pkg/routes/peer-state.ts';
import type { LocalLink, OverlayDevice, PeerNode, RoutingMode } from '../../../pkg/routes/types.ts';

const SELF: PeerNode = { name: 'self', podCIDRs: ['10.244.0.0/24'], internalIPs: ['10.0.0.1'] };
const LINKS: LocalLink[] = [
  { ifindex: 2, name: 'eth0', addresses: [{ family: 4, address: '10.0.0.1', prefixLen: 24 }] },
];
const VXLAN: OverlayDevice[] = [{ family: 4, ifindex: 7, name: 'trellis.v4' }];

function peer(i: number, over: Partial<PeerNode> = {}): PeerNode {
  return { name: `n${i}`, podCIDRs: [`10.244.${i}.0/24`], internalIPs: [`10.0.0.${i + 1}`], ...over };
}

function state(peers: PeerNode[], mode: RoutingMode = 'host-gw', conflictDst?: string): PeerState {
  const basis = { self: SELF, localLinks: LINKS, overlay: mode === 'host-gw' ? [] : VXLAN, mode };
  const plan = desiredRoutes(SELF, peers, LINKS, { mode, overlay: basis.overlay });
  const conflicts = plan.routes
    .filter((r) => r.dst === conflictDst)
    .map((desired) => ({ desired, existing: { family: 4 as const, dst: desired.dst, protocol: 4 } }));
  const s = buildPeerState(basis, peers, plan, conflicts);
  if (s === undefined) throw new Error('no state');
  return s;
}

/** What a step answers when the change reaches other peers' routes: a full pass, crossPeer. */
function crossPeerFull(reason: string): PeerStep {
  return { kind: 'full', reason, crossPeer: true };
}

function applied(step: PeerStep): Extract<PeerStep, { kind: 'apply' }> {
  if (step.kind !== 'apply') throw new Error(`expected apply, got ${JSON.stringify(step)}`);
  return step;
}

describe('planPeerStep', () => {
  const cluster = [peer(1), peer(2), peer(3)];

  it('does nothing when no relevant field changed (labels, heartbeats)', () => {
    const s = state(cluster);
    expect(planPeerStep(s, 'n2', peer(2))).toEqual({ kind: 'unchanged' });
    expect(planPeerStep(s, 'gone', undefined)).toEqual({ kind: 'unchanged' });
  });

  it('adds exactly the new peer route', () => {
    const step = applied(planPeerStep(state(cluster), 'n4', peer(4)));
    expect(step.changed).toEqual(['added']);
    expect(step.add.map((r) => [r.dst, r.gateway, r.ifindex])).toEqual([['10.244.4.0/24', '10.0.0.5', 2]]);
    expect([...step.replace, ...step.remove]).toEqual([]);
  });

  it('removes the deleted peer route', () => {
    const step = applied(planPeerStep(state(cluster), 'n2', undefined));
    expect(step.changed).toEqual(['deleted']);
    expect(step.remove.map((r) => r.dst)).toEqual(['10.244.2.0/24']);
    expect(step.add).toEqual([]);
    expect(step.record).toBeUndefined();
  });

  it('moves a changed pod CIDR: new one added, old one removed', () => {
    const step = applied(planPeerStep(state(cluster), 'n2', peer(2, { podCIDRs: ['10.244.20.0/24'] })));
    expect(step.changed).toEqual(['podCIDRs']);
    expect(step.add.map((r) => r.dst)).toEqual(['10.244.20.0/24']);
    expect(step.remove.map((r) => r.dst)).toEqual(['10.244.2.0/24']);
  });

  it('replaces the route in place when the InternalIP changes', () => {
    const step = applied(planPeerStep(state(cluster), 'n2', peer(2, { internalIPs: ['10.0.0.99'] })));
    expect(step.changed).toEqual(['internalIPs']);
    expect(step.replace.map((r) => r.gateway)).toEqual(['10.0.0.99']);
    expect(step.replaced.map((r) => r.gateway)).toEqual(['10.0.0.3']);
    expect([...step.add, ...step.remove]).toEqual([]);
  });

  it('sends changes of this node to a full pass', () => {
    expect(planPeerStep(state(cluster), 'self', { ...SELF, podCIDRs: ['10.244.100.0/24'] }).kind).toBe(
      'full',
    );
  });

  it('sends a new CIDR overlapping another peer to a full pass', () => {
    const step = planPeerStep(state(cluster), 'n4', peer(4, { podCIDRs: ['10.244.2.0/23'] }));
    expect(step).toMatchObject({ kind: 'full' });
    expect((step as { reason: string }).reason).toMatch(/overlaps 10\.244\.2\.0\/24 of node n2/);
  });

  it('sends a change of a peer whose OLD CIDR overlapped another to a full pass (both were dropped)', () => {
    const s = state([...cluster, peer(4, { podCIDRs: ['10.244.3.0/24'] })]);
    expect(s.peers.get('n3')!.routes).toEqual([]);
    expect(planPeerStep(s, 'n4', peer(4, { podCIDRs: ['10.244.40.0/24'] })).kind).toBe('full');
  });

  it('sends a peer whose route was held by a foreign route to a full pass', () => {
    const s = state(cluster, 'host-gw', '10.244.2.0/24');
    expect(planPeerStep(s, 'n2', peer(2, { internalIPs: ['10.0.0.50'] })).kind).toBe('full');
    // A new node claiming that very prefix was checked by the overlap rule first; a conflict key alone
    // (the foreign route stays after the owner left) is caught too.
    const gone = state([peer(1)], 'host-gw');
    gone.conflictKeys.add(routeKey({ family: 4, dst: '10.244.9.0/24' }));
    expect(planPeerStep(gone, 'n9', peer(9)).kind).toBe('full');
  });

  it('a peer escalated for a reason of its own whose CIDRs or InternalIPs changed drops the state (crossPeer): a later step could not check against them', () => {
    const peers = [peer(1), peer(2), peer(3)];
    const basis = { self: SELF, localLinks: LINKS, overlay: [], mode: 'host-gw' as const };
    const plan = desiredRoutes(SELF, peers, LINKS, { mode: 'host-gw', overlay: [] });
    const refused = plan.routes.find((r) => r.dst === '10.244.1.0/24')!;
    // The last full pass: the kernel refused n1's route, so the pass is partial and a backoff runs steps.
    const failed = [{ op: 'add' as const, route: refused, error: new Error('EINVAL') }];
    const s = buildPeerState(basis, peers, plan, [], failed)!;
    const reason = 'the kernel refused a route of node n1 (10.244.1.0/24) at the last full pass';
    for (const moved of [
      peer(1, { podCIDRs: ['10.244.60.0/24'] }),
      peer(1, { internalIPs: ['10.244.60.7'] }),
    ])
      expect(planPeerStep(s, 'n1', moved)).toEqual(crossPeerFull(reason));
    // A change that leaves its CIDRs and addresses alone keeps the state: only n1 waits for the pass.
    expect(planPeerStep(s, 'n1', peer(1, { vtepMacs: { 4: '02:00:00:00:00:01' } }))).toEqual({
      kind: 'full',
      reason,
    });
    // A new node whose route key is held: its CIDRs are nowhere in the state either.
    const held = state([peer(1)], 'host-gw');
    held.conflictKeys.add(routeKey({ family: 4, dst: '10.244.9.0/24' }));
    expect(planPeerStep(held, 'n9', peer(9))).toEqual(
      crossPeerFull('10.244.9.0/24 was held by a route trellis does not own'),
    );
  });

  it("sends a peer whose InternalIP comes into or leaves this node's own pod CIDR to a full pass (the blackhole is the full pass's)", () => {
    const s = state(cluster);
    expect(planPeerStep(s, 'n7', peer(7, { internalIPs: ['10.244.0.77'] }))).toEqual(
      crossPeerFull("InternalIP 10.244.0.77 of node n7 is in this node's pod CIDR 10.244.0.0/24"),
    );
    const inside = state([...cluster, peer(7, { internalIPs: ['10.244.0.77'] })]);
    expect(inside.blackholes).toEqual([]);
    expect(planPeerStep(inside, 'n7', undefined).kind).toBe('full');
  });

  it('sends an InternalIP shared with another node, or leaving such a share, to a full pass (the plan reports both nodes)', () => {
    const s = state(cluster);
    expect(planPeerStep(s, 'n3', peer(3, { internalIPs: ['10.0.0.2'] }))).toEqual(
      crossPeerFull("InternalIP 10.0.0.2 of node n3 is also node n1's"),
    );
    expect(planPeerStep(s, 'n4', peer(4, { internalIPs: ['10.0.0.1'] }))).toEqual(
      crossPeerFull("InternalIP 10.0.0.1 of node n4 is also this node's"),
    );
    // Planned whole, both are reported; n3 taking another address clears n1's report too: a full pass.
    const shared = state([peer(1), peer(2), peer(3, { internalIPs: ['10.0.0.2'] })]);
    expect(shared.peers.get('n1')!.problems.map((p) => p.problem)).toEqual([
      "InternalIP 10.0.0.2 is also node n3's: traffic to the pods of each goes to whichever machine holds that address",
    ]);
    expect(shared.peers.get('n3')!.problems.map((p) => p.problem)).toEqual([
      "InternalIP 10.0.0.2 is also node n1's: traffic to the pods of each goes to whichever machine holds that address",
    ]);
    expect(planPeerStep(shared, 'n3', peer(3)).kind).toBe('full');
    // An unrelated change of a node in no share stays a step.
    expect(planPeerStep(shared, 'n2', peer(2, { podCIDRs: ['10.244.22.0/24'] })).kind).toBe('apply');
    // A leftover Node without a pod CIDR claims nothing: the real node's changes stay steps.
    const leftover = state([peer(1), peer(2), { name: 'old-n1', podCIDRs: [], internalIPs: ['10.0.0.2'] }]);
    expect(leftover.peers.get('n1')!.problems).toEqual([]);
    expect(planPeerStep(leftover, 'n1', peer(1, { podCIDRs: ['10.244.11.0/24'] })).kind).toBe('apply');
  });

  it("sends a CIDR holding another peer's InternalIP, or an InternalIP into or out of another's CIDR, to a full pass", () => {
    // Behind a router (VXLAN): no connected subnet of ours is involved, only the cluster-wide rule.
    const far = (i: number, over: Partial<PeerNode> = {}): PeerNode =>
      peer(i, { internalIPs: [`10.1.0.${i}`], vtepMacs: { 4: `02:00:00:00:00:0${i}` }, ...over });
    const s = state([far(1), far(2), far(3, { podCIDRs: ['10.1.9.0/24'] })], 'vxlan');
    expect(planPeerStep(s, 'n4', far(4, { podCIDRs: ['10.1.0.0/24'] }))).toEqual(
      crossPeerFull('pod CIDR 10.1.0.0/24 of node n4 holds InternalIP 10.1.0.1 of node n1'),
    );
    expect(planPeerStep(s, 'n2', far(2, { internalIPs: ['10.1.9.2'] }))).toEqual(
      crossPeerFull('InternalIP 10.1.9.2 of node n2 is in pod CIDR 10.1.9.0/24 of node n3'),
    );
    // Once a full pass skipped n3's CIDR: n3's own step must not route it, and n2 leaving it frees it.
    const held = state(
      [far(1), far(2, { internalIPs: ['10.1.9.2'] }), far(3, { podCIDRs: ['10.1.9.0/24'] })],
      'vxlan',
    );
    expect(held.peers.get('n3')!.routes).toEqual([]);
    expect(planPeerStep(held, 'n3', far(3, { podCIDRs: ['10.1.9.0/24'], vtepMacs: {} })).kind).toBe('full');
    expect(planPeerStep(held, 'n2', far(2)).kind).toBe('full');
    expect(planPeerStep(held, 'n2', undefined).kind).toBe('full');
    // Elsewhere a step stays a step.
    expect(applied(planPeerStep(held, 'n1', far(1, { internalIPs: ['10.1.0.11'] }))).changed).toEqual([
      'internalIPs',
    ]);
  });

  it('keeps an overlap with this node local to the peer (dropped, reported, no route)', () => {
    const step = applied(planPeerStep(state(cluster), 'n5', peer(5, { podCIDRs: ['10.244.0.0/25'] })));
    expect(step.add).toEqual([]);
    expect(step.record?.problems[0]?.problem).toMatch(/overlaps this node's pod CIDR/);
  });

  it('writes neighbour and FDB entries for a VXLAN peer, and moves an FDB entry whose address changed', () => {
    const mac = '02:00:00:00:00:04';
    const s = state([peer(1, { vtepMacs: { 4: '02:00:00:00:00:01' } })], 'vxlan');
    const add = applied(planPeerStep(s, 'n4', peer(4, { vtepMacs: { 4: mac } })));
    expect(add.neighbours).toEqual([{ family: 4, ifindex: 7, address: '10.244.4.0', mac, permanent: true }]);
    expect(add.fdb).toEqual([{ ifindex: 7, mac, dst: '10.0.0.5' }]);
    expect(add.add.map((r) => [r.dst, r.gateway, r.onlink])).toEqual([['10.244.4.0/24', '10.244.4.0', true]]);
    commitPeerStep(s, 'n4', add.record);
    const moved = applied(
      planPeerStep(s, 'n4', peer(4, { internalIPs: ['10.9.9.9'], vtepMacs: { 4: mac } })),
    );
    // Re-pointed by the write (replaceFdb), not removed first.
    expect(moved.fdb).toEqual([{ ifindex: 7, mac, dst: '10.9.9.9' }]);
    expect([...moved.add, ...moved.replace, ...moved.remove]).toEqual([]);
    expect([...moved.staleNeighbours, ...moved.staleFdb]).toEqual([]);
  });

  it('moves a peer into the tunnel when its published direct subnets stop holding our InternalIP, and back', () => {
    const mac = '02:00:00:00:00:04';
    const s = state(
      [peer(1, { vtepMacs: { 4: '02:00:00:00:00:01' } }), peer(4, { vtepMacs: { 4: mac } })],
      'auto',
    );
    // Our /24 holds n4's 10.0.0.5, but n4's published /30 (10.0.0.4-7) does not hold our 10.0.0.1.
    const narrowed = applied(
      planPeerStep(s, 'n4', peer(4, { vtepMacs: { 4: mac }, directSubnets: { 4: '10.0.0.4/30' } })),
    );
    expect(narrowed.changed).toEqual(['directSubnets']);
    expect(narrowed.replace.map((r) => [r.dst, r.gateway, r.ifindex, r.onlink])).toEqual([
      ['10.244.4.0/24', '10.244.4.0', 7, true],
    ]);
    expect(narrowed.fdb).toEqual([{ ifindex: 7, mac, dst: '10.0.0.5' }]);
    commitPeerStep(s, 'n4', narrowed.record);
    const widened = applied(
      planPeerStep(s, 'n4', peer(4, { vtepMacs: { 4: mac }, directSubnets: { 4: '10.0.0.0/24' } })),
    );
    expect(widened.replace.map((r) => [r.dst, r.gateway, r.ifindex])).toEqual([
      ['10.244.4.0/24', '10.0.0.5', 2],
    ]);
  });

  it('removes the neighbour and FDB entries only a deleted or changed VXLAN peer used', () => {
    const mac = '02:00:00:00:00:04';
    const s = state(
      [peer(1, { vtepMacs: { 4: '02:00:00:00:00:01' } }), peer(4, { vtepMacs: { 4: mac } })],
      'vxlan',
    );
    const newMac = applied(planPeerStep(s, 'n4', peer(4, { vtepMacs: { 4: '02:00:00:00:00:44' } })));
    // The neighbour is replaced in place (same VTEP address); the old MAC's FDB entry goes after the route.
    expect(newMac.neighbours.map((n) => n.mac)).toEqual(['02:00:00:00:00:44']);
    expect(newMac.staleNeighbours).toEqual([]);
    expect(newMac.staleFdb).toEqual([{ ifindex: 7, mac, dst: '10.0.0.5' }]);
    const gone = applied(planPeerStep(s, 'n4', undefined));
    expect(gone.remove.map((r) => r.dst)).toEqual(['10.244.4.0/24']);
    expect(gone.staleNeighbours).toEqual([
      { family: 4, ifindex: 7, address: '10.244.4.0', mac, permanent: true },
    ]);
    expect(gone.staleFdb).toEqual([{ ifindex: 7, mac, dst: '10.0.0.5' }]);
  });

  it('after any sequence of steps over InternalIPs and CIDRs that hold them, the state matches a full pass', () => {
    let seed = 11;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return Math.floor(seed / 65536) % n;
    };
    // Behind a router (VXLAN), pod CIDRs and InternalIPs drawn from one /22: CIDRs often hold InternalIPs.
    const node = (i: number): PeerNode =>
      peer(i, {
        podCIDRs: [`10.1.${rand(4)}.${rand(4) * 64}/${26 + rand(2)}`],
        internalIPs: [`10.1.${rand(4)}.${1 + rand(250)}`],
        vtepMacs: { 4: '02:00:00:00:00:01' },
      });
    const nodes = new Map<string, PeerNode>();
    for (let i = 1; i <= 8; i++) nodes.set(`n${i}`, node(i));
    let s = state([...nodes.values()], 'vxlan');
    for (let k = 0; k < 300; k++) {
      const i = 1 + rand(10);
      const next = rand(4) === 0 ? undefined : node(i);
      const step = planPeerStep(s, `n${i}`, next);
      if (next === undefined) nodes.delete(`n${i}`);
      else nodes.set(`n${i}`, next);
      if (step.kind === 'full') s = state([...nodes.values()], 'vxlan');
      else if (step.kind === 'apply') commitPeerStep(s, `n${i}`, step.record);
      const routesOf = (x: PeerState) =>
        [...x.peers.values()]
          .flatMap((r) => r.routes)
          .map((r) => `${r.dst} via ${r.gateway}`)
          .sort();
      expect(routesOf(s), `after step ${k}`).toEqual(routesOf(state([...nodes.values()], 'vxlan')));
    }
  });

  it('after any sequence of steps, the state matches a full pass over the final cluster', () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return Math.floor(seed / 65536) % n;
    };
    const nodes = new Map<string, PeerNode>();
    for (let i = 1; i <= 20; i++) nodes.set(`n${i}`, peer(i));
    let s = state([...nodes.values()]);
    let fulls = 0;
    for (let k = 0; k < 300; k++) {
      const i = 1 + rand(30);
      const name = `n${i}`;
      const op = rand(4);
      const next =
        op === 0
          ? undefined
          : op === 1
            ? peer(i, { podCIDRs: [`10.244.${100 + rand(15)}.0/24`] })
            : op === 2
              ? peer(i, { internalIPs: [`10.0.0.${100 + rand(100)}`] })
              : peer(i);
      const step = planPeerStep(s, name, next);
      if (next === undefined) nodes.delete(name);
      else nodes.set(name, next);
      if (step.kind === 'full') {
        // The controller runs a full pass over the cache as it is now.
        fulls++;
        s = state([...nodes.values()]);
      } else if (step.kind === 'apply') {
        commitPeerStep(s, name, step.record);
      }
    }
    const full = state([...nodes.values()]);
    const routesOf = (x: PeerState) =>
      [...x.peers.values()]
        .flatMap((r) => r.routes)
        .map((r) => `${r.dst} via ${r.gateway}`)
        .sort();
    expect(routesOf(s)).toEqual(routesOf(full));
    expect(routesOf(full).length).toBeGreaterThan(5);
    expect(fulls).toBeGreaterThan(0);
    expect(fulls).toBeLessThan(300);
  });
});

describe('changedFields', () => {
  it('names only the fields that decide routes', () => {
    expect(changedFields(peer(1), peer(1))).toEqual([]);
    expect(changedFields(undefined, peer(1))).toEqual(['added']);
    expect(changedFields(peer(1), undefined)).toEqual(['deleted']);
    expect(changedFields(peer(1), peer(1, { vtepMacs: { 4: '02:00:00:00:00:01' } }))).toEqual(['vtepMacs']);
    expect(changedFields(peer(1), peer(1, { directSubnets: { 4: '10.0.0.0/24' } }))).toEqual([
      'directSubnets',
    ]);
    expect(
      changedFields(peer(1, { directSubnets: { 6: '' } }), peer(1, { directSubnets: { 6: '' } })),
    ).toEqual([]);
    expect(changedFields(peer(1), peer(1, { internalIPs: ['10.0.0.2', '10.0.0.3'] }))).toEqual([
      'internalIPs',
    ]);
  });
});

describe('OwnRouteChanges', () => {
  it('matches an expected deletion once, by key and gateway, until it expires', () => {
    let now = 0;
    const own = new OwnRouteChanges({ now: () => now, expiryMs: 1000 });
    const r = { family: 4 as const, dst: '10.244.2.0/24', gateway: '10.0.0.3', protocol: 126 };
    own.expectDelete(r);
    expect(own.consumeDelete({ ...r, gateway: '10.0.0.4' })).toBe(false);
    expect(own.consumeDelete(r)).toBe(true);
    expect(own.consumeDelete(r)).toBe(false);
    own.expectDelete(r);
    now = 1500;
    expect(own.consumeDelete(r)).toBe(false);
    own.expectDelete(r);
    now = 3000;
    own.sweep();
    expect(own.size).toBe(0);
  });

  it('matches a notification without a gateway (nexthop_compat_mode=0) by key alone, once per expected deletion', () => {
    const own = new OwnRouteChanges({ now: () => 0, expiryMs: 1000 });
    const r = { family: 6 as const, dst: 'fd00:10:244:2::/64', gateway: 'fd00::3', protocol: 126 };
    const { gateway: _, ...bare } = r;
    own.expectDelete(r);
    expect(own.consumeDelete({ ...bare, dst: 'fd00:10:244:3::/64' })).toBe(false);
    expect(own.consumeDelete(bare)).toBe(true);
    expect(own.consumeDelete(bare)).toBe(false);
    // The gateway-less notification takes the oldest expected deletion; the other one still matches.
    own.expectDelete(r);
    own.expectDelete({ ...r, gateway: 'fd00::4' });
    expect(own.consumeDelete(bare)).toBe(true);
    expect(own.consumeDelete({ ...r, gateway: 'fd00::4' })).toBe(true);
    expect(own.size).toBe(0);
  });

  it("matches a VXLAN entry's deletion once: a neighbour by device and address, an FDB entry by device, MAC and remote", () => {
    let now = 0;
    const own = new OwnRouteChanges({ now: () => now, expiryMs: 1000 });
    // As the overlay deletes them (a neighbour entry carries a MAC too), and as the notification names them.
    const neighbour: NeighbourEntry = {
      family: 6,
      ifindex: 8,
      address: 'FD00:10:244:3::0',
      mac: '0a:58:00:00:00:03',
    };
    own.expectEntryDelete(neighbour);
    own.expectEntryDelete({ ifindex: 7, mac: '0A:58:00:00:00:03', dst: '10.10.0.3' });
    expect(own.consumeEntryDelete({ ifindex: 7, address: 'fd00:10:244:3::' })).toBe(false); // another device
    expect(own.consumeEntryDelete({ ifindex: 7, mac: '0a:58:00:00:00:03', dst: '10.10.0.4' })).toBe(false);
    expect(own.consumeEntryDelete({ ifindex: 8, address: 'fd00:10:244:3::' })).toBe(true);
    expect(own.consumeEntryDelete({ ifindex: 8, address: 'fd00:10:244:3::' })).toBe(false); // once
    expect(own.consumeEntryDelete({ ifindex: 7, mac: '0a:58:00:00:00:03', dst: '10.10.0.3' })).toBe(true);
    // Neither kind is taken for the other, nor for a route; and an expectation expires.
    own.expectEntryDelete({ ifindex: 7, address: '10.10.0.3' });
    expect(own.consumeEntryDelete({ ifindex: 7, mac: '0a:58:00:00:00:03', dst: '10.10.0.3' })).toBe(false);
    now = 1500;
    expect(own.consumeEntryDelete({ ifindex: 7, address: '10.10.0.3' })).toBe(false);
    own.sweep();
    expect(own.size).toBe(0);
  });
});

describe('describesInputs and kernelHolds (a full pass that needs no plan)', () => {
  const cluster = [peer(1), peer(2), peer(3)];
  const basis = { self: SELF, localLinks: LINKS, overlay: [] as OverlayDevice[], mode: 'host-gw' as const };
  /** The kernel's table as a clean pass left it: the plan, a pod host route, a connected route. */
  function kernel(s: PeerState): RouteInfo[] {
    const planned = [...s.blackholes, ...[...s.peers.values()].flatMap((r) => r.routes)];
    return [
      ...planned.map((r) => ({ ...r })),
      { family: 4, dst: '10.244.0.5/32', ifindex: 9, protocol: 126, scope: 'link', type: 'unicast' },
      { family: 4, dst: '10.0.0.0/24', ifindex: 2, protocol: 2, scope: 'link', type: 'unicast' },
    ];
  }

  it('holds for the inputs it was planned from, in any order, and after steps', () => {
    const s = state(cluster);
    expect(describesInputs(s, basis, [peer(3), SELF, peer(1), peer(2)])).toBe(true);
    expect(kernelHolds(s, kernel(s))).toBe(true);
    const step = applied(planPeerStep(s, 'n4', peer(4)));
    commitPeerStep(s, 'n4', step.record);
    expect(describesInputs(s, basis, [...cluster, peer(4)])).toBe(true);
    expect(kernelHolds(s, kernel(s))).toBe(true);
  });

  it('does not hold when an input differs', () => {
    const s = state(cluster);
    expect(describesInputs(s, basis, [peer(1), peer(2)])).toBe(false); // deleted
    expect(describesInputs(s, basis, [...cluster, peer(4)])).toBe(false); // added
    expect(describesInputs(s, basis, [peer(1), peer(2), peer(2)])).toBe(false); // listed twice, one missing
    expect(describesInputs(s, basis, [...cluster, peer(2)])).toBe(false); // listed twice
    expect(describesInputs(s, basis, [peer(1), peer(2), peer(3, { internalIPs: ['10.0.0.9'] })])).toBe(false);
    expect(
      describesInputs(s, basis, [peer(1), peer(2), peer(3, { vtepMacs: { 4: '02:00:00:00:00:01' } })]),
    ).toBe(false);
    expect(describesInputs(s, { ...basis, self: { ...SELF, podCIDRs: ['10.244.0.0/23'] } }, cluster)).toBe(
      false,
    );
    expect(describesInputs(s, { ...basis, mode: 'auto' }, cluster)).toBe(false);
    expect(describesInputs(s, { ...basis, table: 100 }, cluster)).toBe(false);
    const moved = [{ ...LINKS[0]!, addresses: [{ family: 4 as const, address: '10.0.0.1', prefixLen: 16 }] }];
    expect(describesInputs(s, { ...basis, localLinks: moved }, cluster)).toBe(false);
    expect(describesInputs(s, { ...basis, overlay: VXLAN }, cluster)).toBe(false);
  });

  it('holds with a foreign route behind ours (a higher metric): the full diff would not act on it', () => {
    const s = state(cluster);
    const behind: RouteInfo = {
      family: 4,
      dst: '10.244.2.0/24',
      gateway: '10.0.0.9',
      protocol: 4,
      metric: 100,
    };
    expect(kernelHolds(s, [...kernel(s), behind])).toBe(true);
  });

  it('holds when only pod veths came or went (they change no own address or connected subnet)', () => {
    const s = state(cluster);
    const veth = (ifindex: number): LocalLink => ({
      ifindex,
      name: `trl${ifindex}`,
      addresses: [
        { family: 4, address: '169.254.1.1', prefixLen: 32 },
        { family: 6, address: 'fe80::1', prefixLen: 64 },
      ],
    });
    const withPods = [...LINKS, veth(10), veth(11)];
    expect(describesInputs(s, { ...basis, localLinks: withPods }, cluster)).toBe(true);
    const second = [
      ...withPods,
      { ifindex: 12, name: 'eth1', addresses: [{ family: 4 as const, address: '10.1.0.1', prefixLen: 24 }] },
    ];
    expect(describesInputs(s, { ...basis, localLinks: second }, cluster)).toBe(false);
    const renamed = [{ ...LINKS[0]!, name: 'ens3' }];
    expect(describesInputs(s, { ...basis, localLinks: renamed }, cluster)).toBe(false);
  });

  it('does not hold when the kernel differs from the plan in any way a full diff would act on', () => {
    const s = state(cluster);
    const k = kernel(s);
    const at = (dst: string): number => k.findIndex((r) => r.dst === dst);
    const variants: [string, RouteInfo[]][] = [
      ['a route deleted', k.filter((r) => r.dst !== '10.244.2.0/24')],
      ['the blackhole deleted', k.filter((r) => r.type !== 'blackhole')],
      ['a gateway changed', k.with(at('10.244.2.0/24'), { ...k[at('10.244.2.0/24')]!, gateway: '10.0.0.9' })],
      ['a device changed', k.with(at('10.244.2.0/24'), { ...k[at('10.244.2.0/24')]!, ifindex: 3 })],
      ['onlink set', k.with(at('10.244.2.0/24'), { ...k[at('10.244.2.0/24')]!, onlink: true })],
      [
        'a stray route of ours',
        [...k, { family: 4, dst: '10.244.9.0/24', gateway: '10.0.0.2', protocol: 126 }],
      ],
      ['a second route of ours on a key', [...k, { ...k[at('10.244.2.0/24')]!, metric: 5 }]],
      [
        'a foreign route on our key',
        [
          ...k.filter((r) => r.dst !== '10.244.2.0/24'),
          { family: 4, dst: '10.244.2.0/24', gateway: '10.0.0.3', protocol: 4 },
        ],
      ],
      ['another table', k.map((r) => ({ ...r, table: 100 }))],
    ];
    for (const [what, routes] of variants) expect([what, kernelHolds(s, routes)]).toEqual([what, false]);
    // A foreign route on our key spelled with its metric, and ours only at another metric.
    const onKey = { family: 4 as const, dst: '10.244.2.0/24', gateway: '10.0.0.3', protocol: 4, metric: 0 };
    expect(kernelHolds(s, [...k.filter((r) => r.dst !== '10.244.2.0/24'), onKey])).toBe(false);
    expect(kernelHolds(s, k.with(at('10.244.2.0/24'), { ...k[at('10.244.2.0/24')]!, metric: 5 }))).toBe(
      false,
    );
    // A conflict from the last pass is for the full diff to re-check.
    expect(kernelHolds(state(cluster, 'host-gw', '10.244.2.0/24'), k)).toBe(false);
  });
});

describe('concernsPrefix', () => {
  const foreign = (dst: string, table?: number): RouteInfo => ({
    family: 4,
    dst,
    gateway: '10.0.0.99',
    protocol: 4,
    ...(table === undefined ? {} : { table }),
  });

  it("is true for a peer's prefix, this node's blackhole and a key a foreign route holds; false elsewhere", () => {
    const s = state([peer(1), peer(2)], 'host-gw', '10.244.2.0/24');
    expect(concernsPrefix(s, foreign('10.244.1.0/24'))).toBe(true);
    expect(concernsPrefix(s, foreign('10.244.0.0/24'))).toBe(true); // the blackhole
    expect(concernsPrefix(s, foreign('10.244.2.0/24'))).toBe(true); // held by a foreign route
    expect(concernsPrefix(s, foreign('10.244.3.0/24'))).toBe(false);
    expect(concernsPrefix(s, foreign('10.244.1.0/25'))).toBe(false);
    expect(concernsPrefix(s, foreign('10.244.1.0/24', 100))).toBe(false); // another table
  });

  it('is false for a route behind ours (a higher metric), true for one on our key or in front of it', () => {
    const s = state([peer(1)]);
    expect(concernsPrefix(s, { ...foreign('10.244.1.0/24'), metric: 100 })).toBe(false);
    expect(concernsPrefix(s, { ...foreign('10.244.1.0/24'), metric: 0 })).toBe(true);
    const self6: PeerNode = { name: 'self', podCIDRs: ['fd00:10:244::/64'], internalIPs: ['fd00::1'] };
    const links6: LocalLink[] = [
      { ifindex: 2, name: 'eth0', addresses: [{ family: 6, address: 'fd00::1', prefixLen: 64 }] },
    ];
    const peers6 = [{ name: 'n1', podCIDRs: ['fd00:10:244:1::/64'], internalIPs: ['fd00::2'] }];
    const basis6 = { self: self6, localLinks: links6, overlay: [], mode: 'host-gw' as const };
    const s6 = buildPeerState(basis6, peers6, desiredRoutes(self6, peers6, links6, { mode: 'host-gw' }), [])!;
    const v6 = { family: 6 as const, dst: 'fd00:10:244:1::/64', gateway: 'fd00::99', protocol: 4 };
    expect(s6.peers.get('n1')!.routes).toHaveLength(1);
    expect(concernsPrefix(s6, { ...v6, metric: 2000 })).toBe(false);
    expect(concernsPrefix(s6, { ...v6, metric: 1024 })).toBe(true);
    expect(concernsPrefix(s6, { ...v6, metric: 100 })).toBe(true);
    expect(concernsPrefix(s6, { family: 6, dst: v6.dst, protocol: 4, unreadable: true })).toBe(true);
  });

  it('follows per-node steps: a peer added or deleted changes the answer', () => {
    const s = state([peer(1)]);
    expect(concernsPrefix(s, foreign('10.244.5.0/24'))).toBe(false);
    const step = applied(planPeerStep(s, 'n5', peer(5)));
    commitPeerStep(s, 'n5', step.record);
    expect(concernsPrefix(s, foreign('10.244.5.0/24'))).toBe(true);
    const gone = applied(planPeerStep(s, 'n5', undefined));
    commitPeerStep(s, 'n5', gone.record);
    expect(concernsPrefix(s, foreign('10.244.5.0/24'))).toBe(false);
  });
});

describe('keepsOverlayEntry', () => {
  const far = (i: number): PeerNode =>
    peer(i, { internalIPs: [`10.1.0.${i}`], vtepMacs: { 4: `02:00:00:00:00:0${i}` } });

  it("keeps a VXLAN peer's VTEP neighbour and FDB entry on its device, and nothing else", () => {
    const s = state([far(1), far(2)], 'vxlan');
    // n1's VTEP: its pod CIDR's network address; its FDB entry: its MAC to its InternalIP.
    expect(keepsOverlayEntry(s, { ifindex: 7, address: '10.244.1.0' })).toBe(true);
    expect(keepsOverlayEntry(s, { ifindex: 7, mac: '02:00:00:00:00:02', dst: '10.1.0.2' })).toBe(true);
    expect(
      keepsOverlayEntry(s, { ifindex: 7, mac: '02:00:00:00:00:02'.toUpperCase(), dst: '10.1.0.2' }),
    ).toBe(true);
    // Learned by the kernel, another device, a peer's MAC towards another node, a peer gone.
    expect(keepsOverlayEntry(s, { ifindex: 7, address: '10.244.1.7' })).toBe(false);
    expect(keepsOverlayEntry(s, { ifindex: 8, address: '10.244.1.0' })).toBe(false);
    expect(keepsOverlayEntry(s, { ifindex: 7, mac: '02:00:00:00:00:02', dst: '10.1.0.1' })).toBe(false);
    const gone = applied(planPeerStep(s, 'n2', undefined));
    commitPeerStep(s, 'n2', gone.record);
    expect(keepsOverlayEntry(s, { ifindex: 7, mac: '02:00:00:00:00:02', dst: '10.1.0.2' })).toBe(false);
    // A peer a step added is kept at once.
    const added = applied(planPeerStep(s, 'n3', far(3)));
    commitPeerStep(s, 'n3', added.record);
    expect(keepsOverlayEntry(s, { ifindex: 7, address: '10.244.3.0' })).toBe(true);
  });

  it('keeps nothing for peers routed directly', () => {
    const s = state([peer(1, { vtepMacs: { 4: '02:00:00:00:00:01' } })], 'auto');
    expect(keepsOverlayEntry(s, { ifindex: 7, address: '10.244.1.0' })).toBe(false);
  });
});
