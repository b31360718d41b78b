/**
 * The thin shell around the pure planner: list what we programmed, diff against what the nodes say, apply.
 * A full pass holds no state from earlier passes (level-triggered): a restart over an unchanged cluster
 * lists the same routes, finds nothing to do, and makes zero kernel changes.
 *
 * Between full passes, reconcilePeer handles one Node's change (peer-state.ts plans it, peer-apply.ts
 * writes it) from what the last clean full pass left for each peer. That state is only a cache of the
 * last full pass plus the steps since: it is dropped on any failure, and the caller then runs a full pass.
 *
 * With an overlay (pkg/vxlan) a pass is: devices -> plan -> neighbours and FDB entries -> routes -> stale
 * neighbours and FDB entries, so an onlink route never exists before the entries that let the kernel send
 * through it without ARP/NDP, and entries are removed only after the routes that used them.
 */

import {
  type DeletedEntry,
  type Family,
  hasRouteScan,
  type LinkInfo,
  type NetlinkHandle,
  type RouteInfo,
} from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { type HomeAddress, heldAddressOf, heldReason, holdAbsentInternalIPs } from './absent-internal-ip.ts';
import { applyRouteDiff, type RouteError } from './apply.ts';
import { desiredRoutes, ownDirectSubnets } from './desired.ts';
import { diffRoutes, MAIN_TABLE, type RouteConflict, type RouteDiff, routeKey } from './diff.ts';
import { keepsOverlayEntry } from './kept-entries.ts';
import { concernsPrefix, KernelCheck, kernelHolds } from './kernel-check.ts';
import { gatewayDevices, readLocalLinks } from './local-links.ts';
import { OwnRouteChanges } from './own-changes.ts';
import { applyPeerStep, hasPeerStepWrites, type PeerApplyResult } from './peer-apply.ts';
import {
  buildPeerState,
  commitPeerStep,
  describesInputs,
  type HeldRoute,
  type PeerState,
  type PeerStateBasis,
  planOptions,
  planPeerStep,
  programmedRouteCount,
  tunnelHopKey,
} from './peer-state.ts';
import type {
  DesiredRoutes,
  LocalLink,
  OverlayDevice,
  PeerDecision,
  PeerNode,
  Problem,
  RoutingMode,
  SelfNode,
} from './types.ts';

/** What an overlay pass did besides routes (neighbours, FDB entries, devices); errors are retried next pass. */
export interface OverlayReport {
  /** The devices as they are after prepare(), usable or not, for status and the VTEP annotation. */
  devices: { family: 4 | 6; name: string; ifindex: number; mac: string; mtu: number; action: string }[];
  added: number;
  removed: number;
  removalsDeferred: number;
  /**
   * `device`: a device could not be made, checked or removed (every peer of its family may be off the
   * plan); `entry`: one neighbour or FDB entry could not be written or removed.
   */
  errors: { op: string; what: string; scope: 'device' | 'entry'; error: Error }[];
}

/**
 * The overlay backend as the route reconciler drives it (implemented by pkg/vxlan VxlanOverlay). Declared
 * here, next to its consumer, so pkg/routes does not depend on pkg/vxlan.
 */
export interface OverlayPort {
  /**
   * Makes this node's overlay devices match the mode (host-gw: none) and returns the usable ones.
   * Device problems (no InternalIP of a family, say) are returned, not thrown.
   */
  prepare(
    self: SelfNode,
    localLinks: LocalLink[],
    mode: RoutingMode,
    /** The node's links, when the pass has just listed them (else prepare lists them). */
    links?: readonly LinkInfo[],
  ): Promise<{
    devices: OverlayDevice[];
    problems: Problem[];
    /** It made, changed or removed a device (a VTEP address added): the links read before are stale. */
    linksChanged?: boolean;
  }>;
  /**
   * Adds/replaces the neighbour and FDB entries the decisions need; before the routes. Returns the
   * tunnel next hops whose entries could not be written: no route is moved onto them this pass.
   */
  program(decisions: readonly PeerDecision[]): Promise<readonly TunnelHop[]>;
  /**
   * Removes entries on our devices that no decision needs (only when synced); after the routes. The
   * entries of `stillRouted` stay: routes through them that the pass failed to change or remove.
   */
  prune(
    decisions: readonly PeerDecision[],
    synced: boolean,
    stillRouted?: readonly TunnelHop[],
  ): Promise<OverlayReport>;
}

/** A route's next hop through an overlay device: the peer's VTEP address on that device. */
export interface TunnelHop {
  ifindex: number;
  address: string;
}

function hopKey(h: TunnelHop): string {
  return tunnelHopKey(h.ifindex, h.address);
}

/** Why a route through a tunnel hop whose entries the kernel refused is held back. */
const UNWIRED_REASON =
  "its VXLAN neighbour or FDB entry could not be written (the pass's overlay errors say why)";

/** An overlay device could not be made, checked or removed: no per-node state after such a pass. */
function deviceTrouble(overlay: OverlayReport | undefined): boolean {
  return overlay?.errors.some((e) => e.scope === 'device') ?? false;
}

/** The next hop of a route through a gateway, as a TunnelHop (whatever its device). */
function hopOf(r: RouteInfo): TunnelHop | undefined {
  return r.gateway === undefined || r.ifindex === undefined
    ? undefined
    : { ifindex: r.ifindex, address: r.gateway };
}

export interface ReconcileInput {
  /**
   * True only once the caller's node cache has completed its first full list. Before that, a missing node
   * may simply not have been seen yet, so stale routes are NOT removed (adds and replaces still happen).
   */
  synced: boolean;
  self: SelfNode;
  /** Every node in the cluster; `self` may be included, it is skipped by name. */
  peers: PeerNode[];
  /** The agent's interfaces; read through the handle when omitted. */
  localLinks?: LocalLink[];
}

export interface ReconcileReport {
  added: number;
  replaced: number;
  removed: number;
  unchanged: number;
  /** Stale routes left in place because the input was not synced yet. */
  removalsDeferred: number;
  errors: RouteError[];
  problems: Problem[];
  decisions: PeerDecision[];
  conflicts: RouteDiff['conflicts'];
  /** Present when the reconciler drives an overlay. */
  overlay?: OverlayReport;
  /**
   * What this node publishes as the subnets it routes peers directly on (ownDirectSubnets), from the
   * pass's view of its links; absent from per-node steps' reports, which do not read the links.
   */
  directSubnets?: Partial<Record<Family, string>>;
  /**
   * True when the inputs were the ones the last clean pass and the steps since had planned, and the
   * kernel held exactly that plan: nothing was planned or changed (most periodic resyncs).
   */
  quiet?: boolean;
  /** Orphaned nexthop objects of ours deleted by this pass (pkg/netlink nexthop-book.ts), when any. */
  nexthopsPruned?: number;
  /**
   * Planned routes the pass did not write, and why: their tunnel hop's neighbour or FDB entry could not
   * be written, or they wait for this node's InternalIP back on its link (absent-internal-ip.ts). Absent
   * when none. The pass is retried with backoff while there are any.
   */
  heldBack?: HeldRoute[];
  /**
   * The devices (ifindex, ascending) the pass's plan routes peers through: the agent watches their
   * state, since the kernel deletes a device's nexthop objects, and with them our IPv4 routes, without
   * a route notification when it goes down or loses carrier. Absent from per-node steps' reports.
   */
  routeDevices?: readonly number[];
  durationMs: number;
}

/** The netlink adapter's orphan collection (ExtendedNetlinkHandle); optional, detected at run time. */
interface NexthopPruning {
  pruneNexthops(): Promise<number>;
}

function hasNexthopPruning(h: NetlinkHandle): h is NetlinkHandle & NexthopPruning {
  return typeof (h as Partial<NexthopPruning>).pruneNexthops === 'function';
}

/** The outcome of reconcilePeer. */
export type PeerStepOutcome =
  | { kind: 'unchanged' }
  /** Not decidable (or failed) per node: the caller runs a full pass. */
  | { kind: 'full'; reason: string }
  | {
      kind: 'applied';
      node: string;
      changed: string[];
      /** The set of pod CIDRs in the cluster changed (masquerade needs an update). */
      cidrsChanged: boolean;
      result: PeerApplyResult;
      /**
       * The keys (routeKey) of the routes this step added or replaced, and of those it removed: for a
       * caller that folds several steps into one report, which must tell the routes none of them wrote.
       */
      routeKeys: { written: readonly string[]; removed: readonly string[] };
      /** Why this node (or part of it) gets no route: said at once, not only by the next full pass. */
      problems: readonly Problem[];
      /**
       * The last full pass's report with every step since folded in, as the state is when called (the
       * caller sets added/replaced/removed; here they are 0 and every programmed route is `unchanged`).
       */
      report: () => ReconcileReport;
      /**
       * Set when this step's routes leave by a device the last report's routeDevices did not name (a
       * peer on another uplink's subnet): every device now, for the link carrier watch.
       */
      routeDevices?: readonly number[];
    };

/** The devices the state's routes through a gateway leave by (gatewayDevices over every record). */
function stateDevices(state: PeerState): number[] {
  const devices = new Set<number>();
  for (const rec of state.peers.values()) {
    for (const i of gatewayDevices(rec.routes)) devices.add(i);
  }
  return [...devices].sort((a, b) => a - b);
}

function foldedReport(state: PeerState, durationMs: number): ReconcileReport {
  const decisions: PeerDecision[] = [];
  const problems: Problem[] = [...state.selfProblems];
  for (const rec of state.peers.values()) {
    for (const d of rec.decisions) decisions.push(d);
    for (const p of rec.problems) problems.push(p);
  }
  return {
    added: 0,
    replaced: 0,
    removed: 0,
    unchanged: programmedRouteCount(state),
    removalsDeferred: 0,
    errors: state.failed,
    problems,
    decisions,
    conflicts: state.conflicts,
    ...(state.heldBack.length === 0 ? {} : { heldBack: state.heldBack }),
    durationMs,
  };
}

/** A new route the kernel refused because a route the dump could not show holds its key. */
function unreadableConflict(desired: RouteInfo): RouteConflict {
  const existing: RouteInfo = { family: desired.family, dst: desired.dst, unreadable: true };
  if (desired.table !== undefined) existing.table = desired.table;
  return { desired, existing };
}

export interface RouteReconcilerOptions {
  handle: NetlinkHandle;
  mode?: RoutingMode;
  /** Routing table for the routes we own; main (254) by default. */
  table?: number;
  /** Injectable clock (ms) for durationMs. */
  now?: () => number;
  /** VXLAN backend (auto and vxlan modes need it; in host-gw it removes its devices). */
  overlay?: OverlayPort;
  /** Deletions this agent makes itself; shared with the overlay, whose removals it records too. */
  ownChanges?: OwnRouteChanges;
}

export class RouteReconciler {
  private readonly handle: NetlinkHandle;
  private readonly mode: RoutingMode;
  private readonly table: number | undefined;
  private readonly now: () => number;
  private readonly overlay: OverlayPort | undefined;
  /** Passes never overlap: a second caller waits for the one in flight. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Per-peer state of the last clean full pass and the steps since; undefined: a full pass is needed. */
  private state: PeerState | undefined;
  /** Deletions made by per-node steps and passes, so their notifications do not trigger a full pass. */
  readonly ownChanges: OwnRouteChanges;
  /** routeDevices of the last plan (a quiet pass plans nothing and reports these). */
  private planDevices: readonly number[] = [];
  /** A full pass is under way (concernsPrefix). */
  private passRunning = false;
  /** Where the last pass found (or held) this node's InternalIPs: absent-internal-ip.ts. */
  private homes: HomeAddress[] = [];

  constructor(opts: RouteReconcilerOptions) {
    this.handle = opts.handle;
    this.mode = opts.mode ?? 'host-gw';
    this.table = opts.table;
    this.now = opts.now ?? (() => performance.now());
    this.overlay = opts.overlay;
    this.ownChanges = opts.ownChanges ?? new OwnRouteChanges();
  }

  /**
   * The links a pass would plan with now: as read, with this node's InternalIPs held on the links the
   * last pass found them on (absent-internal-ip.ts), and which planned routes wait for such an address.
   * For views that plan beside the passes (the routes view), which would otherwise plan a peer on that
   * subnet through the tunnel, as no pass does meanwhile; the hold's record stays the passes'.
   */
  linksToPlan(
    self: SelfNode,
    links: readonly LocalLink[],
  ): { links: LocalLink[]; problems: Problem[]; waits: (route: RouteInfo) => string | undefined } {
    const absent = holdAbsentInternalIPs(self, links, this.homes, this.now());
    return {
      links: absent.links,
      problems: absent.problems,
      // Why a planned route is not written meanwhile (its gateway reachable only through a held address).
      waits: (route) => {
        const home = heldAddressOf(route, absent.held, links);
        return home === undefined ? undefined : heldReason(home);
      },
    };
  }

  /**
   * Every route of our table, both families, not only those carrying protocol 126: the diff needs to see a
   * foreign route that holds the key a desired route would take (an operator's static route to the same
   * prefix, a connected subnet). NLM_F_REPLACE would silently overwrite it; the diff reports a conflict
   * instead. Ownership (protocol 126 and gateway-or-blackhole) still decides what may be changed or removed.
   */
  async listProgrammed(): Promise<RouteInfo[]> {
    const lists = await Promise.all(
      ([4, 6] as Family[]).map((family) =>
        this.handle.listRoutes({ family, table: this.table ?? MAIN_TABLE, unreadable: true }),
      ),
    );
    return lists.flat();
  }

  reconcile(input: ReconcileInput): Promise<ReconcileReport> {
    const run = this.tail.then(() => this.pass(input));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Reconciles one peer (absent: deleted) against what is programmed for it, or says a full pass is
   * needed. Never throws: a failure drops the per-peer state and asks for a full pass.
   */
  reconcilePeer(name: string, peer: PeerNode | undefined): Promise<PeerStepOutcome> {
    const run = this.tail.then(() => this.peerStep(name, peer));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Whether someone else's route at this prefix matters: it replaced one of ours, or it held a key we
   * want and may just have gone. While a full pass runs, any in our table does: the pass may have read
   * the table before it came, and would leave state that does not know of it until the next resync.
   * False otherwise without state: a full pass is on its way and reads the table (or the node list
   * names a node twice, and every pass is a full one that reads it).
   */
  concernsPrefix(route: RouteInfo): boolean {
    if (this.passRunning) return (route.table ?? MAIN_TABLE) === (this.table ?? MAIN_TABLE);
    return this.state !== undefined && concernsPrefix(this.state, route);
  }

  /** True (once) when a route deletion notification is one a per-node step caused. */
  isOwnDeletion(route: RouteInfo): boolean {
    return this.ownChanges.consumeDelete(route);
  }

  /** Whether a VXLAN neighbour or FDB entry's deletion is one this agent made (matched once). */
  isOwnEntryDeletion(entry: DeletedEntry): boolean {
    return this.ownChanges.consumeEntryDelete(entry);
  }

  /** Whether the last clean plan keeps this VXLAN entry (kept-entries.ts); true without one. */
  keepsEntry(entry: DeletedEntry): boolean {
    return this.state === undefined || keepsOverlayEntry(this.state, entry);
  }

  private async peerStep(name: string, peer: PeerNode | undefined): Promise<PeerStepOutcome> {
    const start = this.now();
    const state = this.state;
    if (state === undefined) return { kind: 'full', reason: 'no clean full pass yet' };
    if (!hasPeerStepWrites(this.handle))
      return { kind: 'full', reason: 'netlink handle cannot add exclusively or check a key' };
    this.ownChanges.sweep();
    const step = planPeerStep(state, name, peer);
    if (step.kind === 'full' && step.crossPeer === true) {
      // Later steps (a backoff runs them until the full pass) would check their overlaps against this
      // peer's old CIDRs and addresses: a node claiming its new, clashing CIDR would be routed.
      this.state = undefined;
      return { kind: 'full', reason: step.reason };
    }
    if (step.kind !== 'apply') return step;
    let result: PeerApplyResult;
    try {
      result = await applyPeerStep(this.handle, step, this.ownChanges);
    } catch (e) {
      // The kernel may be half changed; only a full pass knows what is there now.
      this.state = undefined;
      return { kind: 'full', reason: errorText(e) };
    }
    commitPeerStep(state, name, step.record);
    const cidrsChanged = step.changed.some((c) => c === 'added' || c === 'deleted' || c === 'podCIDRs');
    // Built on demand: assembling thousands of decisions per step would be garbage the next event pays for.
    const report = (): ReconcileReport => foldedReport(state, this.now() - start);
    const problems = step.record?.problems ?? [];
    // A device the carrier watch does not follow yet (a device no longer used stays followed until the
    // next full pass: a needless pass on its flap is all that costs).
    const fresh = gatewayDevices(step.record?.routes ?? []).filter((i) => !this.planDevices.includes(i));
    if (fresh.length > 0) this.planDevices = [...this.planDevices, ...fresh].sort((a, b) => a - b);
    return {
      kind: 'applied',
      node: name,
      changed: step.changed,
      cidrsChanged,
      result,
      routeKeys: {
        written: [...step.add, ...step.replace].map(routeKey),
        removed: step.remove.map(routeKey),
      },
      problems,
      report,
      ...(fresh.length > 0 ? { routeDevices: this.planDevices } : {}),
    };
  }

  private async pass(input: ReconcileInput): Promise<ReconcileReport> {
    this.passRunning = true;
    try {
      return await this.fullPass(input);
    } finally {
      this.passRunning = false;
    }
  }

  private async fullPass(input: ReconcileInput): Promise<ReconcileReport> {
    const start = this.now();
    // Whatever happens below, the old per-peer state no longer describes the kernel.
    const previous = this.state;
    this.state = undefined;
    // One listing of the links for both (a pass listed them twice, ~100 pod veths each time).
    const links = input.localLinks === undefined ? await this.handle.listLinks() : undefined;
    const linksBefore = input.localLinks ?? (await readLocalLinks(this.handle, links));
    const prepared: Awaited<ReturnType<OverlayPort['prepare']>> =
      this.overlay === undefined
        ? { devices: [], problems: [] }
        : await this.overlay.prepare(input.self, linksBefore, this.mode, links);
    // A device the overlay just made or changed is one of this node's links from now on: planned with
    // the links as the next pass reads them, or that pass finds its inputs changed and plans it all again
    // (~0.9 s at 5,000 nodes, at the first resync after every start).
    const linksRead =
      input.localLinks === undefined && prepared.linksChanged === true
        ? await readLocalLinks(this.handle)
        : linksBefore;
    const absent = holdAbsentInternalIPs(input.self, linksRead, this.homes, this.now());
    this.homes = absent.homes;
    const localLinks = absent.links;
    const basis: PeerStateBasis = {
      self: input.self,
      localLinks,
      overlay: prepared.devices,
      mode: this.mode,
      ...(this.table === undefined ? {} : { table: this.table }),
    };
    const directSubnets = ownDirectSubnets(input.self, localLinks, {
      mode: this.mode,
      overlay: prepared.devices,
    });
    // Inputs the last clean pass (and the steps since) already planned: the plan is the state's, and
    // what is left to do is the level-triggered part, reading the kernel and checking it holds that plan.
    // An idle resync at 5,000 nodes spent most of its time and garbage re-planning an unchanged cluster.
    const known =
      previous !== undefined && input.synced && describesInputs(previous, basis, input.peers)
        ? previous
        : undefined;
    let plan = known === undefined ? this.planAndNote(basis, input.peers) : undefined;
    const folded = known === undefined ? undefined : foldedReport(known, 0);
    const unready = await this.overlay?.program((plan ?? folded)?.decisions ?? []);
    // An entry that could not be written, or an InternalIP held, holds routes back: the full diff
    // below works out which.
    if (
      known !== undefined &&
      folded !== undefined &&
      (unready ?? []).length === 0 &&
      absent.held.length === 0 &&
      (await this.kernelStillHolds(known))
    ) {
      const overlay = await this.overlay?.prune(folded.decisions, true);
      // An entry left that could not be removed is harmless to the routes; the retry removes it.
      if (!deviceTrouble(overlay)) this.state = known;
      // The steps since the last plan may have routed peers through other devices (or none through one).
      this.planDevices = stateDevices(known);
      // Neighbour or FDB entries written back (deleted or changed by someone else) make it no quiet pass.
      const repaired = (overlay?.added ?? 0) + (overlay?.removed ?? 0) > 0;
      return {
        ...folded,
        problems: [...prepared.problems, ...folded.problems],
        ...(overlay === undefined ? {} : { overlay }),
        directSubnets,
        routeDevices: this.planDevices,
        ...(repaired ? {} : { quiet: true }),
        durationMs: this.now() - start,
      };
    }
    // Something differs (an input, or the kernel behind our back): plan from scratch and diff.
    const programmed = await this.listProgrammed();
    plan ??= this.planAndNote(basis, input.peers);
    const diff = diffRoutes(plan.routes, programmed);
    const remove = input.synced === true ? diff.remove : [];
    // A route is not moved onto a tunnel hop whose neighbour or FDB entry could not be written: it
    // would lead nowhere, where the route it replaces may still work. The pass reports the entry's
    // error, and the retry after it writes both. Nor is one written through the subnet of an InternalIP
    // held while it is off its link that no address of the link reaches now (the kernel would refuse
    // it): it waits for the address.
    const unwired = new Set((unready ?? []).map(hopKey));
    const heldBack: HeldRoute[] = [];
    const unwritten = new Set<string>();
    if (unwired.size > 0 || absent.held.length > 0) {
      for (const r of plan.routes) {
        const hop = hopOf(r);
        if (hop === undefined) continue;
        const key = hopKey(hop);
        const home = unwired.has(key) ? undefined : heldAddressOf(r, absent.held, linksRead);
        if (!unwired.has(key) && home === undefined) continue;
        unwritten.add(key);
        heldBack.push({
          route: r,
          reason: home === undefined ? UNWIRED_REASON : heldReason(home),
        });
      }
    }
    const waits = (r: RouteInfo): boolean => {
      const hop = hopOf(r);
      return hop !== undefined && unwritten.has(hopKey(hop));
    };
    const held = unwritten.size === 0 ? [] : [...diff.add, ...diff.replace].filter(waits);
    const add = held.length === 0 ? diff.add : diff.add.filter((r) => !waits(r));
    const replace = held.length === 0 ? diff.replace : diff.replace.filter((r) => !waits(r));
    // The pass's own removals are not tampering either: their notifications must not run another pass.
    this.ownChanges.sweep();
    for (const r of remove) this.ownChanges.expectDelete(r);
    const applied = await applyRouteDiff(this.handle, { add, replace, remove });
    const conflicts =
      applied.taken.length === 0
        ? diff.conflicts
        : [...diff.conflicts, ...applied.taken.map(unreadableConflict)];
    // The routes the kernel still has as they were (a replace or removal refused, a move held back):
    // their tunnel entries stay until a pass changes them.
    const unchanged = new Set([
      ...applied.errors.filter((e) => e.op !== 'add').map((e) => routeKey(e.route)),
      ...held.map(routeKey),
    ]);
    const stillRouted =
      unchanged.size === 0
        ? []
        : programmed.flatMap((r) => (unchanged.has(routeKey(r)) ? (hopOf(r) ?? []) : []));
    const overlay = await this.overlay?.prune(plan.decisions, input.synced === true, stillRouted);
    // Only a pass that found the kernel off its plan can have left objects behind (a route deleted or
    // replaced by someone else, a crash mid-write); quiet passes skip the two extra dumps.
    // An orphan left is harmless and the next pass that finds the kernel off its plan tries again: a
    // failed prune is a problem to report, not a reason to fail a pass whose routes are in place.
    let nexthopsPruned = 0;
    const pruneProblems: Problem[] = [];
    if (hasNexthopPruning(this.handle)) {
      try {
        nexthopsPruned = await this.handle.pruneNexthops();
      } catch (err) {
        pruneProblems.push({
          node: input.self.name,
          problem: `orphaned nexthop objects not pruned: ${errorText(err)}`,
        });
      }
    }
    // Per-node steps start from a pass over a complete node list that left the kernel as planned, but
    // for the routes and tunnel hops it knows were refused (a step touching one escalates; the backoff's
    // pass retries). A device in trouble may have any peer of its family off the plan.
    const clean = input.synced && !deviceTrouble(overlay);
    this.state = clean
      ? buildPeerState(basis, input.peers, plan, conflicts, applied.errors, {
          hops: unwritten,
          routes: heldBack,
          ...(absent.held.length === 0
            ? {}
            : { waits: (r: RouteInfo) => heldAddressOf(r, absent.held, linksRead) !== undefined }),
        })
      : undefined;
    return {
      added: applied.added,
      replaced: applied.replaced,
      removed: applied.removed,
      unchanged: diff.unchanged,
      removalsDeferred: diff.remove.length - remove.length,
      errors: applied.errors,
      problems: [...prepared.problems, ...absent.problems, ...plan.problems, ...pruneProblems],
      decisions: plan.decisions,
      conflicts,
      ...(overlay === undefined ? {} : { overlay }),
      directSubnets,
      ...(nexthopsPruned > 0 ? { nexthopsPruned } : {}),
      ...(heldBack.length === 0 ? {} : { heldBack }),
      routeDevices: this.planDevices,
      durationMs: this.now() - start,
    };
  }

  /**
   * True when the kernel's table holds exactly the state's routes (kernelHolds), read as a stream
   * where the adapter offers one: an idle resync then keeps no dump alive (the routes of one datagram
   * at a time), where a full listing got promoted to the old generation on every pass.
   */
  private async kernelStillHolds(state: PeerState): Promise<boolean> {
    if (!hasRouteScan(this.handle)) return kernelHolds(state, await this.listProgrammed());
    const check = new KernelCheck(state);
    const table = this.table ?? MAIN_TABLE;
    for (const family of [4, 6] as Family[]) {
      await this.handle.scanRoutes(
        { family, table, unreadable: true },
        (r) => check.see(r),
        () => check.fail(),
      );
    }
    return check.holds();
  }

  private planAndNote(basis: PeerStateBasis, peers: PeerNode[]): DesiredRoutes {
    const plan = this.plan(basis, peers);
    this.planDevices = gatewayDevices(plan.routes);
    return plan;
  }

  private plan(basis: PeerStateBasis, peers: PeerNode[]): DesiredRoutes {
    return desiredRoutes(basis.self, peers, basis.localLinks, planOptions(basis));
  }
}
