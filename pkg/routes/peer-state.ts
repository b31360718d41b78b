/**
 * Per-node reconciliation, the pure part: what a full pass left programmed for each peer, and what one
 * Node's change requires given that state (client-go's per-key pattern, still level-triggered: the step
 * reads the node's CURRENT state and compares it with what is programmed for it, never the event).
 *
 * A step may only change the routes, neighbours and FDB entries of its own peer. Anything whose effect
 * reaches beyond that peer, or that the state cannot decide safely, becomes `full` and the caller runs a
 * full pass instead (which re-reads links, devices and the whole route table):
 *   - this node itself (blackholes, IPAM ranges, VXLAN devices, the connected subnets all depend on it);
 *   - an old or new pod CIDR that overlaps another peer's: the planner drops conflicting CIDRs on EVERY
 *     node involved, so one node's change adds or removes another node's routes;
 *   - a pod CIDR that holds another peer's InternalIP, or an old or new InternalIP inside another peer's
 *     pod CIDR: the planner drops a CIDR holding any node's InternalIP, and a step sees one peer's only;
 *   - an old or new InternalIP inside this node's own pod CIDR (its blackhole is the full pass's);
 *   - a peer whose routes the last full pass found held by a foreign route (the full pass reports it),
 *     or could not write (the kernel refused it: only a full pass retries it), or a peer routed
 *     through a hop the full pass held routes back from (a VXLAN entry it could not write, a gateway on
 *     the subnet of an InternalIP off its link: the same);
 *   - no state (no clean full pass over a synced cache yet).
 * The executor escalates too on any netlink error and when an exclusive add finds the key taken (see
 * peer-apply.ts).
 */

import { sameList } from '../compare.ts';
import type { FdbEntry, NeighbourEntry, RouteInfo } from '../datapath/ports.ts';
import { appendExact, exact } from '../exact-list.ts';
import {
  type Cidr,
  canonicalIp,
  cidrsOverlap,
  familyBits,
  formatCidr,
  formatIp,
  parseCidr,
  parseIp,
} from '../ip/index.ts';
import type { RouteError } from './apply.ts';
import { CidrIndex } from './cidr-index.ts';
import { desiredRoutes, localLinksKey } from './desired.ts';
import { MAIN_TABLE, type RouteDiff, routeKey } from './diff.ts';
import type { ProgrammedIndex } from './kernel-check.ts';
import { isUnusableNodeIp } from './node-ip.ts';
import { overlayStale, overlayWrites } from './peer-overlay.ts';
import type {
  DesiredRoutes,
  DesiredRoutesOptions,
  LocalLink,
  OverlayDevice,
  PeerDecision,
  PeerNode,
  Problem,
  RoutingMode,
  SelfNode,
} from './types.ts';

/** What the last full pass worked from; a per-node step plans with the same inputs. */
export interface PeerStateBasis {
  self: SelfNode;
  localLinks: LocalLink[];
  overlay: OverlayDevice[];
  mode: RoutingMode;
  table?: number;
}

/** The planner's options for a basis: a full pass and a per-node step must plan alike. */
export function planOptions(basis: PeerStateBasis): DesiredRoutesOptions {
  return {
    mode: basis.mode,
    ...(basis.table === undefined ? {} : { table: basis.table }),
    overlay: basis.overlay,
  };
}

/** One peer as last reconciled. */
export interface PeerRecord {
  /** The fields that decide its routes, as last reconciled (a copy). */
  peer: PeerNode;
  /** Its valid pod CIDRs: the overlap index. */
  cidrs: Cidr[];
  /** Its usable InternalIPs as host prefixes (/32, /128): the InternalIP index. */
  ips: Cidr[];
  decisions: PeerDecision[];
  /** Our routes in the kernel for it: the planned ones minus those held by a foreign route. */
  routes: RouteInfo[];
  problems: Problem[];
}

/** A planned route a full pass held back, and why. */
export interface HeldRoute {
  route: RouteInfo;
  reason: string;
}

/** What a full pass held back: the next hops (tunnelHopKey), the routes, and the hold's predicate. */
export interface HeldBack {
  hops: ReadonlySet<string>;
  routes: readonly HeldRoute[];
  waits?: (route: RouteInfo) => boolean;
}

export interface PeerState {
  basis: PeerStateBasis;
  peers: Map<string, PeerRecord>;
  /** Problems of the full pass not about a peer (this node's own). */
  selfProblems: Problem[];
  /** Our blackhole routes. */
  blackholes: RouteInfo[];
  conflicts: RouteDiff['conflicts'];
  /** routeKey of every conflicting desired route. */
  conflictKeys: Set<string>;
  /**
   * The kernel's refusals of the full pass (a route, a removal): the kernel is off the plan there, so
   * no pass is quiet (kernel-check.ts) and a step touching such a route escalates, while every other
   * peer still gets per-node steps. One error that never clears would otherwise send every Node event
   * of the cluster to a full pass at the longest backoff.
   */
  failed: RouteError[];
  /** routeKey of every failed route. */
  failedKeys: Set<string>;
  /**
   * The next hops (tunnelHopKey) the full pass held routes back from: tunnel hops whose neighbour or FDB
   * entry it could not write, and gateways on the subnet of an InternalIP held while it is off its link
   * (absent-internal-ip.ts). The routes through them are not the state's (held back, or left without the
   * entries they resolve by).
   * Like `failed`, no pass is quiet while there is one and a step of a peer using one escalates; a
   * neighbour table that is full must not send every other Node event of the cluster to a full pass.
   */
  unwiredHops: Set<string>;
  /** The routes held back through those hops, and why (step reports carry them). */
  heldBack: HeldRoute[];
  /**
   * While an InternalIP is held (absent-internal-ip.ts): whether a route would wait for it. A step
   * writing such a route escalates (the kernel would refuse it). Absent when none is held.
   */
  waits?: (route: RouteInfo) => boolean;
  /** Every record's `cidrs` by owner (kept in step with `peers` by buildPeerState and commitPeerStep). */
  cidrIndex: CidrIndex;
  /** Every record's `ips` by owner, kept the same way. */
  ipIndex: CidrIndex;
  /** The programmed routes by family and destination, for kernelHolds; built on first use, dropped on a step. */
  programmedIndex?: ProgrammedIndex;
}

/**
 * The state after a full pass over a synced cache that left no overlay device errors; its route errors
 * are `failed`, the next hops it held routes back from `unwiredHops` (`held`). undefined when the input
 * cannot support per-node steps (a name listed twice).
 */
export function buildPeerState(
  basis: PeerStateBasis,
  peers: readonly PeerNode[],
  plan: DesiredRoutes,
  conflicts: RouteDiff['conflicts'],
  failed: readonly RouteError[] = [],
  held: HeldBack = { hops: new Set(), routes: [] },
): PeerState | undefined {
  const unwiredHops = held.hops;
  const conflictKeys = new Set(conflicts.map((c) => routeKey(c.desired)));
  const failedKeys = new Set(failed.map((e) => routeKey(e.route)));
  const records = new Map<string, PeerRecord>();
  // Indexed loops, as the planner's (pkg/routes/desired.ts): no iterator result per step. The lists
  // kept per peer until it changes are grown by `appendExact`, so none holds spare slots (exact-list.ts).
  for (let i = 0; i < peers.length; i++) {
    const p = peers[i]!;
    if (p.name === basis.self.name) continue;
    if (records.has(p.name)) return undefined;
    records.set(p.name, {
      peer: copyPeer(p),
      cidrs: validCidrs(p),
      ips: hostPrefixes(p),
      decisions: [],
      routes: [],
      problems: [],
    });
  }
  const ownerOf = new Map<string, PeerRecord>();
  for (let i = 0; i < plan.decisions.length; i++) {
    const d = plan.decisions[i]!;
    const rec = records.get(d.node);
    if (rec === undefined) continue;
    rec.decisions = appendExact(rec.decisions, d);
    for (let j = 0; j < d.podCIDRs.length; j++) ownerOf.set(`${d.family} ${d.podCIDRs[j]!}`, rec);
  }
  const blackholes: RouteInfo[] = [];
  for (let i = 0; i < plan.routes.length; i++) {
    const r = plan.routes[i]!;
    // A held key is not ours, a blackhole's neither (counted as programmed, it was one route too many);
    // a refused one is not programmed (a refused replace left the old route, or none where the kernel
    // had put it through another program's nexthop object: either way the next full pass's).
    if (conflictKeys.size > 0 && conflictKeys.has(routeKey(r))) continue;
    if (failedKeys.size > 0 && failedKeys.has(routeKey(r))) continue;
    if (unwiredHops.size > 0 && throughHop(r, unwiredHops)) continue;
    if (r.type === 'blackhole') blackholes.push(r);
    else {
      const rec = ownerOf.get(`${r.family} ${r.dst}`);
      if (rec !== undefined) rec.routes = appendExact(rec.routes, r);
    }
  }
  const selfProblems: Problem[] = [];
  for (let i = 0; i < plan.problems.length; i++) {
    const p = plan.problems[i]!;
    const rec = records.get(p.node);
    if (rec === undefined) selfProblems.push(p);
    else rec.problems = appendExact(rec.problems, p);
  }
  const cidrIndex = CidrIndex.of(records, (rec) => rec.cidrs);
  const ipIndex = CidrIndex.of(records, (rec) => rec.ips);
  return {
    basis,
    peers: records,
    selfProblems,
    blackholes,
    conflicts,
    conflictKeys,
    failed: [...failed],
    failedKeys,
    unwiredHops: new Set(unwiredHops),
    heldBack: [...held.routes],
    ...(held.waits === undefined ? {} : { waits: held.waits }),
    cidrIndex,
    ipIndex,
  };
}

export type PeerStep =
  | { kind: 'unchanged' }
  /**
   * `crossPeer`: the change reaches other peers' routes (an overlap, an InternalIP inside a pod
   * CIDR), or the peer's new CIDRs or InternalIPs are not in the state (escalated before its record
   * could change): the state no longer says what they may have, until a full pass plans them all.
   */
  | { kind: 'full'; reason: string; crossPeer?: true }
  | {
      kind: 'apply';
      node: string;
      /** What changed, for the log: added, deleted, podCIDRs, internalIPs, vtepMacs, directSubnets. */
      changed: string[];
      add: RouteInfo[];
      replace: RouteInfo[];
      /** Replaced routes as they were (their removal may be notified). */
      replaced: RouteInfo[];
      remove: RouteInfo[];
      /** VXLAN: written before the routes. */
      neighbours: NeighbourEntry[];
      fdb: FdbEntry[];
      /** Entries only the peer's old decisions used: removed after the routes that went through them. */
      staleNeighbours: NeighbourEntry[];
      staleFdb: FdbEntry[];
      /** The peer's record after the step; undefined when the node is gone. */
      record: PeerRecord | undefined;
    };

/** What reconciling `name` requires, given the state and the node as the cache has it now. */
export function planPeerStep(state: PeerState, name: string, current: PeerNode | undefined): PeerStep {
  const { basis } = state;
  if (name === basis.self.name) return { kind: 'full', reason: 'this node changed' };
  const old = state.peers.get(name);
  if (old === undefined && current === undefined) return { kind: 'unchanged' };
  const changed = changedFields(old?.peer, current);
  if (changed.length === 0) return { kind: 'unchanged' };

  const cidrs = current === undefined ? [] : validCidrs(current);
  const ips = current === undefined ? [] : hostPrefixes(current);
  const clash =
    overlapWithOthers(state, name, [...(old?.cidrs ?? []), ...cidrs]) ??
    underlayOfOthers(state, name, cidrs, [...(old?.ips ?? []), ...ips]);
  if (clash !== undefined) return { kind: 'full', reason: clash, crossPeer: true };
  // Escalated for a reason of its own (below), a peer whose pod CIDRs or InternalIPs changed keeps its
  // old record in the state (or none, when new): steps until the full pass (a backoff runs them)
  // would check their overlaps against what it no longer has, so it drops the state like a clash.
  const reachesOthers = changed.some((c) => c === 'added' || c === 'podCIDRs' || c === 'internalIPs');
  const escalate = (reason: string): PeerStep =>
    reachesOthers ? { kind: 'full', reason, crossPeer: true } : { kind: 'full', reason };
  const refused =
    old === undefined || state.failed.length === 0
      ? undefined
      : state.failed.find((e) =>
          old.decisions.some((d) => d.family === e.route.family && d.podCIDRs.includes(e.route.dst)),
        );
  if (refused !== undefined) {
    return escalate(
      `the kernel refused a route of node ${name} (${refused.route.dst}) at the last full pass`,
    );
  }
  const unwired = unwiredHopOf(state, old?.decisions ?? []);
  if (unwired !== undefined) {
    return escalate(`node ${name}: ${unwiredReason(unwired)}`);
  }
  if (old?.routes.length !== old?.decisions.reduce((n, d) => n + routeCount(d), 0)) {
    return escalate(`a route of node ${name} was held by a route trellis does not own`);
  }

  const plan =
    current === undefined
      ? { routes: [], problems: [], decisions: [] }
      : desiredRoutes(basis.self, [current], basis.localLinks, planOptions(basis));
  const routes = plan.routes.filter((r) => r.type !== 'blackhole');
  const held = routes.find((r) => state.conflictKeys.has(routeKey(r)));
  if (held !== undefined) {
    return escalate(`${held.dst} was held by a route trellis does not own`);
  }
  const stuck =
    state.failedKeys.size === 0 ? undefined : routes.find((r) => state.failedKeys.has(routeKey(r)));
  if (stuck !== undefined) {
    return escalate(`the kernel refused a change of ${stuck.dst} at the last full pass`);
  }
  const unwiredNext = unwiredHopOf(state, plan.decisions);
  if (unwiredNext !== undefined) {
    return escalate(`node ${name}: ${unwiredReason(unwiredNext)}`);
  }
  const waiting = state.waits === undefined ? undefined : routes.find(state.waits);
  if (waiting !== undefined) {
    return escalate(
      `node ${name}: ${waiting.dst} would go through the subnet of this node's InternalIP, which is off its link: only a full pass writes it`,
    );
  }

  const before = new Map((old?.routes ?? []).map((r) => [routeKey(r), r]));
  const add: RouteInfo[] = [];
  const replace: RouteInfo[] = [];
  const replaced: RouteInfo[] = [];
  for (const r of routes) {
    const prev = before.get(routeKey(r));
    before.delete(routeKey(r));
    if (prev === undefined) add.push(r);
    else if (!sameRoute(prev, r)) {
      replace.push(r);
      replaced.push(prev);
    }
  }
  const remove = [...before.values()];

  const { neighbours, fdb } = overlayWrites(old?.decisions ?? [], plan.decisions);
  const { staleNeighbours, staleFdb } = overlayStale(state, name, old?.decisions ?? [], plan.decisions);
  const record: PeerRecord | undefined =
    current === undefined
      ? undefined
      : {
          peer: copyPeer(current),
          cidrs,
          ips,
          decisions: exact(plan.decisions),
          routes: exact(routes),
          problems: exact(plan.problems.filter((p) => p.node === name)),
        };
  return {
    kind: 'apply',
    node: name,
    changed,
    add,
    replace,
    replaced,
    remove,
    neighbours,
    fdb,
    staleNeighbours,
    staleFdb,
    record,
  };
}

/** The key of a next hop (a VTEP address on an overlay device, a gateway on a link), as unwiredHops holds it. */
export function tunnelHopKey(ifindex: number, address: string): string {
  return `${ifindex} ${canonicalIp(address) ?? address}`;
}

/** Whether the route goes through a gateway on a device that `hops` names (tunnelHopKey). */
function throughHop(r: RouteInfo, hops: ReadonlySet<string>): boolean {
  return r.gateway !== undefined && r.ifindex !== undefined && hops.has(tunnelHopKey(r.ifindex, r.gateway));
}

/** The next hop (VTEP or InternalIP) of the first decision whose hop the last full pass held back. */
function unwiredHopOf(state: PeerState, decisions: readonly PeerDecision[]): string | undefined {
  if (state.unwiredHops.size === 0) return undefined;
  for (const d of decisions) {
    if (d.path === 'unreachable') continue;
    const hop = d.path === 'vxlan' ? d.vtepIP : d.nodeIP;
    if (state.unwiredHops.has(tunnelHopKey(d.ifindex, hop))) return hop;
  }
  return undefined;
}

/** Why a step through a held-back hop is a full pass's. */
function unwiredReason(hop: string): string {
  return `the last full pass held back routes through ${hop} (a VXLAN entry the kernel refused, or this node's InternalIP off that subnet): only a full pass writes them`;
}

/** Records a step's outcome; only after the kernel accepted all of it. */
export function commitPeerStep(state: PeerState, name: string, record: PeerRecord | undefined): void {
  state.programmedIndex = undefined;
  const old = state.peers.get(name);
  if (old !== undefined) {
    state.cidrIndex.remove(name, old.cidrs);
    state.ipIndex.remove(name, old.ips);
  }
  if (record === undefined) state.peers.delete(name);
  else {
    state.peers.set(name, record);
    state.cidrIndex.add(name, record.cidrs);
    state.ipIndex.add(name, record.ips);
  }
}

/** Inter-node plus blackhole routes the state says are programmed (for the report's `unchanged`). */
export function programmedRouteCount(state: PeerState): number {
  let n = state.blackholes.length;
  for (const rec of state.peers.values()) n += rec.routes.length;
  return n;
}

/**
 * True when the state was planned from exactly these inputs: the same node, devices, mode and table,
 * links that plan the same (localLinksKey: the same own addresses and connected subnets, whatever pod
 * veths came or went), and the same peers (every field that decides routes; none missing, added or
 * listed twice). A full plan from them would then be the state's own (per-node steps keep it so), and a
 * full pass only has to check that the kernel still holds it (kernel-check.ts).
 */
export function describesInputs(
  state: PeerState,
  basis: PeerStateBasis,
  peers: readonly PeerNode[],
): boolean {
  const was = state.basis;
  if (
    was.mode !== basis.mode ||
    (was.table ?? MAIN_TABLE) !== (basis.table ?? MAIN_TABLE) ||
    was.self.name !== basis.self.name ||
    changedFields(was.self, basis.self).length > 0 ||
    (was.localLinks !== basis.localLinks &&
      localLinksKey(was.localLinks) !== localLinksKey(basis.localLinks)) ||
    !sameDevices(was.overlay, basis.overlay)
  ) {
    return false;
  }
  const seen = new Set<string>();
  for (const p of peers) {
    if (p.name === basis.self.name) continue;
    const rec = state.peers.get(p.name);
    if (rec === undefined || seen.has(p.name) || !sameRouteFields(rec.peer, p)) return false;
    seen.add(p.name);
  }
  return seen.size === state.peers.size;
}

/** changedFields(old, current) is empty, without building the list (a resync asks for every peer). */
function sameRouteFields(old: PeerNode, current: PeerNode): boolean {
  return (
    sameList(old.podCIDRs, current.podCIDRs) &&
    sameList(old.internalIPs, current.internalIPs) &&
    old.vtepMacs?.[4] === current.vtepMacs?.[4] &&
    old.vtepMacs?.[6] === current.vtepMacs?.[6] &&
    old.directSubnets?.[4] === current.directSubnets?.[4] &&
    old.directSubnets?.[6] === current.directSubnets?.[6]
  );
}

/**
 * The relevant fields that differ. Labels, conditions, heartbeats and every other annotation do not
 * change routes: most MODIFIED events end here with nothing to do.
 */
export function changedFields(old: PeerNode | undefined, current: PeerNode | undefined): string[] {
  if (old === undefined) return current === undefined ? [] : ['added'];
  if (current === undefined) return ['deleted'];
  const out: string[] = [];
  if (!sameList(old.podCIDRs, current.podCIDRs)) out.push('podCIDRs');
  if (!sameList(old.internalIPs, current.internalIPs)) out.push('internalIPs');
  if (old.vtepMacs?.[4] !== current.vtepMacs?.[4] || old.vtepMacs?.[6] !== current.vtepMacs?.[6]) {
    out.push('vtepMacs');
  }
  if (
    old.directSubnets?.[4] !== current.directSubnets?.[4] ||
    old.directSubnets?.[6] !== current.directSubnets?.[6]
  ) {
    out.push('directSubnets');
  }
  return out;
}

function overlapWithOthers(state: PeerState, name: string, cidrs: readonly Cidr[]): string | undefined {
  const clash = state.cidrIndex.firstOverlap(cidrs, name);
  if (clash === undefined) return undefined;
  return `pod CIDR ${formatCidr(clash.cidr)} of node ${name} overlaps ${formatCidr(clash.otherCidr)} of node ${clash.other}`;
}

/**
 * The planner skips a pod CIDR holding any node's InternalIP (desired.ts), and a step plans with one
 * peer's: another peer's InternalIP in this one's CIDR, or this one's old or new InternalIP in another's
 * CIDR (skipped, or no longer), is the full pass's to judge.
 */
function underlayOfOthers(
  state: PeerState,
  name: string,
  cidrs: readonly Cidr[],
  ips: readonly Cidr[],
): string | undefined {
  const held = state.ipIndex.firstOverlap(cidrs, name);
  if (held !== undefined) {
    const ip = formatIp({ family: held.otherCidr.family, value: held.otherCidr.network });
    return `pod CIDR ${formatCidr(held.cidr)} of node ${name} holds InternalIP ${ip} of node ${held.other}`;
  }
  // One InternalIP claimed by two nodes is reported on both (desired.ts): a step sees one. A Node
  // without a valid pod CIDR routes nowhere and claims nothing there.
  const shared = state.ipIndex.firstOverlap(
    ips,
    name,
    (owner) => (state.peers.get(owner)?.cidrs.length ?? 0) > 0,
  );
  if (shared !== undefined) {
    const ip = formatIp({ family: shared.cidr.family, value: shared.cidr.network });
    return `InternalIP ${ip} of node ${name} is also node ${shared.other}'s`;
  }
  const mine = hostPrefixes(state.basis.self);
  const own = ips.find((i) => mine.some((m) => m.family === i.family && m.network === i.network));
  if (own !== undefined) {
    return `InternalIP ${formatIp({ family: own.family, value: own.network })} of node ${name} is also this node's`;
  }
  const within = state.cidrIndex.firstOverlap(ips, name);
  if (within !== undefined) {
    const ip = formatIp({ family: within.cidr.family, value: within.cidr.network });
    return `InternalIP ${ip} of node ${name} is in pod CIDR ${formatCidr(within.otherCidr)} of node ${within.other}`;
  }
  // This node's own CIDRs too: one holding a node's InternalIP gets no blackhole (desired.ts), which
  // only a full pass plans.
  for (const text of state.basis.self.podCIDRs) {
    const own = parseCidr(text, { strict: false });
    const ip =
      own === undefined ? undefined : ips.find((i) => i.family === own.family && cidrsOverlap(own, i));
    if (own !== undefined && ip !== undefined) {
      return `InternalIP ${formatIp({ family: ip.family, value: ip.network })} of node ${name} is in this node's pod CIDR ${formatCidr(own)}`;
    }
  }
  return undefined;
}

function routeCount(d: PeerDecision): number {
  return d.path === 'unreachable' ? 0 : d.podCIDRs.length;
}

/**
 * The planner and the kernel dump both emit canonical text, so routes compare field by field (the same
 * attributes the diff compares; a blackhole has no gateway or device).
 */
export function sameRoute(a: RouteInfo, b: RouteInfo): boolean {
  const type = a.type ?? 'unicast';
  if (type !== (b.type ?? 'unicast')) return false;
  if (type === 'blackhole') return true;
  return (
    (a.gateway ?? '') === (b.gateway ?? '') &&
    a.ifindex === b.ifindex &&
    (a.onlink === true) === (b.onlink === true)
  );
}

function sameDevices(a: readonly OverlayDevice[], b: readonly OverlayDevice[]): boolean {
  return (
    a.length === b.length &&
    a.every((x, i) => x.family === b[i]!.family && x.ifindex === b[i]!.ifindex && x.name === b[i]!.name)
  );
}

function validCidrs(p: PeerNode): Cidr[] {
  let out: Cidr[] = [];
  const texts = p.podCIDRs ?? [];
  for (let i = 0; i < texts.length; i++) {
    const c = parseCidr(texts[i]!);
    if (c !== undefined) out = appendExact(out, c);
  }
  return out;
}

/** The InternalIPs the planner uses (usable ones: node-ip.ts), as /32 and /128 prefixes for a CidrIndex. */
function hostPrefixes(p: PeerNode): Cidr[] {
  let out: Cidr[] = [];
  const texts = p.internalIPs ?? [];
  for (let i = 0; i < texts.length; i++) {
    const ip = parseIp(texts[i]!);
    if (ip === undefined || isUnusableNodeIp(ip) !== undefined) continue;
    if (holdsHost(out, ip.family, ip.value)) continue;
    out = appendExact(out, { family: ip.family, network: ip.value, prefixLen: familyBits(ip.family) });
  }
  return out;
}

function holdsHost(list: readonly Cidr[], family: 4 | 6, value: bigint): boolean {
  for (let i = 0; i < list.length; i++)
    if (list[i]!.family === family && list[i]!.network === value) return true;
  return false;
}

/** The lists are read-only (PeerNode), so a record shares them; an empty vtepMacs or directSubnets is left out. */
function copyPeer(p: PeerNode): PeerNode {
  const macs = p.vtepMacs;
  const subnets = p.directSubnets;
  return {
    name: p.name,
    podCIDRs: p.podCIDRs ?? [],
    internalIPs: p.internalIPs ?? [],
    ...(macs === undefined || (macs[4] === undefined && macs[6] === undefined)
      ? {}
      : { vtepMacs: { ...macs } }),
    ...(subnets === undefined || (subnets[4] === undefined && subnets[6] === undefined)
      ? {}
      : { directSubnets: { ...subnets } }),
  };
}
