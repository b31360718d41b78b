/**
 * Whether the kernel's route table still holds what a PeerState says is programmed (kernelHolds,
 * KernelCheck for a streamed dump), and whether someone else's route touches it (concernsPrefix). Lets
 * a full pass over unchanged inputs skip planning and diffing: see describesInputs in peer-state.ts.
 */

import type { RouteInfo } from '../datapath/ports.ts';
import { isOwnedRoute, kernelMetric, MAIN_TABLE, outranks, routeKey } from './diff.ts';
import { type PeerState, sameRoute } from './peer-state.ts';

/** The programmed routes by family and destination (PeerState.programmedIndex). */
export interface ProgrammedIndex {
  v4: Map<string, { route: RouteInfo; seen: number }>;
  v6: Map<string, { route: RouteInfo; seen: number }>;
  size: number;
  /** Numbers the kernelHolds calls, to find a second route of ours on one key without a set per call. */
  calls: number;
}

/**
 * True when the route table holds exactly the routes the state says are programmed: each one once, with
 * the same shape and metric, no other route of ours, and no foreign route on any of their keys or in
 * front of them (one behind them is no conflict for the diff either: diff.ts). Routes are compared
 * as the kernel dump and the planner spell them (both canonical); a difference of spelling alone counts
 * as a difference, so it can cost a full plan but never hide drift. False whenever the state holds a
 * conflict (a foreign route in our way), a route the kernel refused, or routes held back (a tunnel hop
 * whose entries it refused, a gateway waiting for this node's InternalIP): whether that route is still
 * there, and what it is now, is for a full diff to report, and the held ones' to retry.
 */
export function kernelHolds(state: PeerState, programmed: readonly RouteInfo[]): boolean {
  const check = new KernelCheck(state);
  for (const r of programmed) check.see(r);
  return check.holds();
}

/**
 * kernelHolds fed one route at a time, as a streamed dump arrives: the routes need not all be alive
 * at once. see() every route of the table (both families), then holds().
 */
export class KernelCheck {
  private readonly index: ProgrammedIndex;
  private readonly table: number;
  private readonly call: number;
  private held = 0;
  private ok: boolean;

  constructor(state: PeerState) {
    this.ok = state.conflicts.length === 0 && state.failed.length === 0 && state.unwiredHops.size === 0;
    this.table = state.basis.table ?? MAIN_TABLE;
    state.programmedIndex ??= indexProgrammed(state);
    this.index = state.programmedIndex;
    this.call = ++this.index.calls;
  }

  see(r: RouteInfo): void {
    if (!this.ok) return;
    if ((r.table ?? MAIN_TABLE) !== this.table) {
      this.ok = false;
      return;
    }
    const slot = (r.family === 4 ? this.index.v4 : this.index.v6).get(r.dst);
    if (!isOwnedRoute(r)) {
      if (slot !== undefined && outranks(r, kernelMetric(slot.route))) this.ok = false;
      return;
    }
    // Ours and not wanted, wanted in another shape or at another metric, or a second route of ours there.
    if (
      slot === undefined ||
      slot.seen === this.call ||
      kernelMetric(r) !== kernelMetric(slot.route) ||
      !sameRoute(slot.route, r)
    ) {
      this.ok = false;
      return;
    }
    slot.seen = this.call;
    this.held++;
  }

  /** Gives up: the answer is no (a dump restarted, say). */
  fail(): void {
    this.ok = false;
  }

  holds(): boolean {
    return this.ok && this.held === this.index.size;
  }
}

/**
 * Whether someone else's route appearing or going changes what a full pass would do: it holds the key
 * of a route this state programs (a route of ours, a blackhole) or sits in front of it, or its prefix
 * is one a foreign route keeps from us. One behind ours (a higher metric) changes nothing (diff.ts).
 */
export function concernsPrefix(state: PeerState, r: RouteInfo): boolean {
  if ((r.table ?? MAIN_TABLE) !== (state.basis.table ?? MAIN_TABLE)) return false;
  state.programmedIndex ??= indexProgrammed(state);
  const index = state.programmedIndex;
  const slot = (r.family === 4 ? index.v4 : index.v6).get(r.dst);
  if (slot !== undefined && outranks(r, kernelMetric(slot.route))) return true;
  return state.conflictKeys.size > 0 && state.conflictKeys.has(routeKey(r));
}

function indexProgrammed(state: PeerState): ProgrammedIndex {
  const index: ProgrammedIndex = { v4: new Map(), v6: new Map(), size: 0, calls: 0 };
  const add = (route: RouteInfo): void => {
    const byDst = route.family === 4 ? index.v4 : index.v6;
    if (!byDst.has(route.dst)) index.size++;
    byDst.set(route.dst, { route, seen: 0 });
  };
  for (const r of state.blackholes) add(r);
  for (const rec of state.peers.values()) for (const r of rec.routes) add(r);
  return index;
}
