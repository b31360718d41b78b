/**
 * Executes one per-node step (peer-state.ts) on a NetlinkHandle. Thin: the plan decides, this writes, in
 * the order that keeps traffic working: neighbours, FDB entries (re-pointed in place when moved; an onlink
 * VXLAN route must never exist before them), replaced routes, new routes, removed routes, and last the
 * neighbours and FDB entries only the removed or changed routes used.
 *
 * New routes are created with NLM_F_EXCL, never replaced: the step's state says no route of ours holds the
 * key, so anything there is someone else's (or ours unknown to the state) and a replace would overwrite
 * it. A changed route is replaced in place (no gap for the pods' traffic) only after a lookup showed its
 * key free or still held by ours. EEXIST, like any other failure, stops the step; the caller runs a full
 * pass, which lists the table and reports the conflict. A step that fails halfway leaves the kernel partly
 * changed; the full pass after it makes the whole table match again.
 */

import type { KeyHolder, NetlinkHandle, RouteInfo } from '../datapath/ports.ts';
import type { KeyLookup } from './apply.ts';
import { MAIN_TABLE } from './diff.ts';
import type { OwnRouteChanges } from './own-changes.ts';
import type { PeerStep } from './peer-state.ts';

/** The exclusive create and the key check are the netlink adapter's (ExtendedNetlinkHandle), not the port's. */
interface PeerStepWrites extends KeyLookup {
  addRoute(route: RouteInfo): Promise<void>;
}

export function hasPeerStepWrites(h: NetlinkHandle): h is NetlinkHandle & PeerStepWrites {
  const w = h as Partial<PeerStepWrites>;
  return typeof w.addRoute === 'function' && typeof w.keyHolder === 'function';
}

export interface PeerApplyResult {
  added: number;
  replaced: number;
  removed: number;
  /** Neighbour and FDB entries written or removed. */
  neighbours: number;
  fdb: number;
}

/** The step could not be completed; `reason` names the request and why. */
export class PeerStepError extends Error {
  readonly exists: boolean;
  constructor(message: string, exists: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PeerStepError';
    this.exists = exists;
  }
}

export async function applyPeerStep(
  handle: NetlinkHandle & PeerStepWrites,
  step: Extract<PeerStep, { kind: 'apply' }>,
  own: OwnRouteChanges,
): Promise<PeerApplyResult> {
  const out: PeerApplyResult = { added: 0, replaced: 0, removed: 0, neighbours: 0, fdb: 0 };
  const run = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      if (e instanceof PeerStepError) throw e;
      const errno = (e as { errno?: unknown } | null)?.errno;
      const exists = errno === 'EEXIST';
      const why = exists
        ? 'the key is taken by a route this step did not know (a full pass reports it)'
        : e instanceof Error
          ? e.message
          : String(e);
      throw new PeerStepError(`${what}: ${why}`, exists, { cause: e });
    }
  };
  for (const n of step.neighbours) {
    await run(`replace neighbour ${n.address} lladdr ${n.mac}`, () => handle.replaceNeighbour(n));
    out.neighbours++;
  }
  for (const f of step.fdb) {
    await run(`replace fdb ${f.mac} dst ${f.dst}`, () => handle.replaceFdb(f));
    out.fdb++;
  }
  for (const [i, r] of step.replace.entries()) {
    // The step's state says the key holds our route; a replace would overwrite whatever holds it now.
    await run(`look up route ${r.dst}`, async () => {
      const why = notOurs(r, await handle.keyHolder(r.dst, r.table ?? MAIN_TABLE));
      if (why !== undefined) throw new PeerStepError(`replace route ${r.dst}: ${why}`, true);
    });
    // Replacing IPv6 routes can be notified as a deletion of the old one.
    const prev = step.replaced[i];
    if (prev !== undefined) own.expectDelete(prev);
    await run(`replace route ${r.dst}`, () => handle.replaceRoute(r));
    out.replaced++;
  }
  for (const r of step.add) {
    await run(`add route ${r.dst}`, () => handle.addRoute(r));
    out.added++;
  }
  for (const r of step.remove) {
    own.expectDelete(r);
    await run(`delete route ${r.dst}`, () => handle.deleteRoute(r));
    out.removed++;
  }
  for (const n of step.staleNeighbours) {
    own.expectEntryDelete(n);
    await run(`delete neighbour ${n.address}`, () => handle.deleteNeighbour(n));
    out.neighbours++;
  }
  for (const f of step.staleFdb) {
    own.expectEntryDelete(f);
    await run(`delete fdb ${f.mac} dst ${f.dst}`, () => handle.deleteFdb(f));
    out.fdb++;
  }
  return out;
}

/**
 * Why `route` must not be replaced, unless its key is free or held by a route of ours in its table:
 * someone else's route may have taken it since the last full pass without the kernel watch passing it
 * on (a routing daemon's protocol, which the watch filters out, or a change inside its debounce).
 */
function notOurs(route: RouteInfo, holder: KeyHolder): string | undefined {
  if (holder.kind === 'free') return undefined;
  if (holder.kind === 'unknown')
    return `cannot tell what holds the key (${holder.why}); a full pass reads it`;
  if (holder.protocol === route.protocol && holder.table === (route.table ?? MAIN_TABLE)) return undefined;
  return `the key is held by a route of protocol ${holder.protocol} in table ${holder.table} (a full pass reports it)`;
}
