/**
 * The thin shell around the pure planner: list what we programmed, diff against what the nodes say, apply.
 * It holds no state between passes (level-triggered): a restart over an unchanged cluster lists the same
 * routes, finds nothing to do, and makes zero kernel changes.
 */

import type { Family, NetlinkHandle, RouteInfo } from '../datapath/ports.ts';
import { applyRouteDiff, type RouteError } from './apply.ts';
import { desiredRoutes } from './desired.ts';
import { diffRoutes, MAIN_TABLE, type RouteDiff } from './diff.ts';
import type { LocalLink, PeerDecision, PeerNode, Problem, RoutingMode, SelfNode } from './types.ts';

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
  durationMs: number;
}

export interface RouteReconcilerOptions {
  handle: NetlinkHandle;
  mode?: RoutingMode;
  /** Routing table for the routes we own; main (254) by default. */
  table?: number;
  /** Injectable clock (ms) for durationMs. */
  now?: () => number;
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
  /** Passes never overlap: a second caller waits for the one in flight. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(opts: RouteReconcilerOptions) {
    this.handle = opts.handle;
    this.mode = opts.mode ?? 'host-gw';
    this.table = opts.table;
    this.now = opts.now ?? (() => performance.now());
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
    const plan = desiredRoutes(input.self, input.peers, localLinks, {
      mode: this.mode,
      ...(this.table === undefined ? {} : { table: this.table }),
    });
    const programmed = await this.listProgrammed();
    const diff = diffRoutes(plan.routes, programmed);
    const remove = input.synced === true ? diff.remove : [];
    const applied = await applyRouteDiff(this.handle, { add: diff.add, replace: diff.replace, remove });
    return {
      added: applied.added,
      replaced: applied.replaced,
      removed: applied.removed,
      unchanged: diff.unchanged,
      removalsDeferred: diff.remove.length - remove.length,
      errors: applied.errors,
      problems: plan.problems,
      decisions: plan.decisions,
      conflicts: diff.conflicts,
      durationMs: this.now() - start,
    };
  }
}
