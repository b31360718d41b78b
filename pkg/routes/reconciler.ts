/**
 * The thin shell around the pure planner: list what we programmed, diff against what the nodes say, apply.
 * It holds no state between passes (level-triggered): a restart over an unchanged cluster lists the same
 * routes, finds nothing to do, and makes zero kernel changes.
 *
 * With an overlay (pkg/vxlan) a pass is: devices -> plan -> neighbours and FDB entries -> routes -> stale
 * neighbours and FDB entries, so an onlink route never exists before the entries that let the kernel send
 * through it without ARP/NDP, and entries are removed only after the routes that used them.
 */

import type { Family, NetlinkHandle, RouteInfo } from '../datapath/ports.ts';
import { applyRouteDiff, type RouteError } from './apply.ts';
import { desiredRoutes } from './desired.ts';
import { diffRoutes, MAIN_TABLE, type RouteDiff } from './diff.ts';
import type {
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
  errors: { op: string; what: string; error: Error }[];
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
  ): Promise<{ devices: OverlayDevice[]; problems: Problem[] }>;
  /** Adds/replaces the neighbour and FDB entries the decisions need; before the routes. */
  program(decisions: readonly PeerDecision[]): Promise<void>;
  /** Removes entries on our devices that no decision needs (only when synced); after the routes. */
  prune(decisions: readonly PeerDecision[], synced: boolean): Promise<OverlayReport>;
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
  durationMs: number;
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
}

/** Reads the agent's interfaces and addresses through netlink (the connected subnets host-gw needs). */
export async function readLocalLinks(handle: NetlinkHandle): Promise<LocalLink[]> {
  const [links, addresses] = await Promise.all([handle.listLinks(), handle.listAddresses()]);
  return links
    .map((l) => ({
      ifindex: l.index,
      name: l.name,
      addresses: addresses
        .filter((a) => a.ifindex === l.index && a.scope !== 'host')
        .map((a) => ({ family: a.family, address: a.address, prefixLen: a.prefixLen })),
    }))
    .sort((a, b) => a.ifindex - b.ifindex);
}

export class RouteReconciler {
  private readonly handle: NetlinkHandle;
  private readonly mode: RoutingMode;
  private readonly table: number | undefined;
  private readonly now: () => number;
  private readonly overlay: OverlayPort | undefined;
  /** Passes never overlap: a second caller waits for the one in flight. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(opts: RouteReconcilerOptions) {
    this.handle = opts.handle;
    this.mode = opts.mode ?? 'host-gw';
    this.table = opts.table;
    this.now = opts.now ?? (() => performance.now());
    this.overlay = opts.overlay;
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
        this.handle.listRoutes({ family, table: this.table ?? MAIN_TABLE }),
      ),
    );
    return lists.flat();
  }

  reconcile(input: ReconcileInput): Promise<ReconcileReport> {
    const run = this.tail.then(() => this.pass(input));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async pass(input: ReconcileInput): Promise<ReconcileReport> {
    const start = this.now();
    const localLinks = input.localLinks ?? (await readLocalLinks(this.handle));
    const prepared =
      this.overlay === undefined
        ? { devices: [], problems: [] }
        : await this.overlay.prepare(input.self, localLinks, this.mode);
    const plan = desiredRoutes(input.self, input.peers, localLinks, {
      mode: this.mode,
      ...(this.table === undefined ? {} : { table: this.table }),
      overlay: prepared.devices,
    });
    await this.overlay?.program(plan.decisions);
    const programmed = await this.listProgrammed();
    const diff = diffRoutes(plan.routes, programmed);
    const remove = input.synced === true ? diff.remove : [];
    const applied = await applyRouteDiff(this.handle, { add: diff.add, replace: diff.replace, remove });
    const overlay = await this.overlay?.prune(plan.decisions, input.synced === true);
    return {
      added: applied.added,
      replaced: applied.replaced,
      removed: applied.removed,
      unchanged: diff.unchanged,
      removalsDeferred: diff.remove.length - remove.length,
      errors: applied.errors,
      problems: [...prepared.problems, ...plan.problems],
      decisions: plan.decisions,
      conflicts: diff.conflicts,
      ...(overlay === undefined ? {} : { overlay }),
      durationMs: this.now() - start,
    };
  }
}
