/**
 * Per-peer route state from one reconcile report: is every pod CIDR of every other node routed from
 * here? Pure (the optional cache only memoizes). It feeds the `trellis_peers` and
 * `trellis_peer_route_broken` metrics and the node's coverage annotation.
 */
import { compareOrdinal } from '../compare.ts';
import { UNREADABLE_HOLDER } from '../routes/diff.ts';
import type { ReconcileReport } from '../routes/reconciler.ts';
import type { PeerDecision } from '../routes/types.ts';

export interface PeerRouteState {
  peer: string;
  /** '4' or '6'; '' for a peer skipped as a whole (no family decision was made). */
  family: '4' | '6' | '';
  /**
   * direct: host-gw route via the peer's InternalIP; vxlan: through our VXLAN device of that family;
   * unreachable: no way found; skipped: invalid input.
   */
  path: string;
  ok: boolean;
  /** Why not ok. */
  reason?: string;
}

type ReportPart = Pick<ReconcileReport, 'decisions' | 'problems' | 'errors' | 'conflicts' | 'heldBack'>;

/**
 * A state per decision object, for decisions no error or conflict touches: then the state follows from
 * the decision alone. The reconciler keeps an unchanged peer's decision objects between passes, so a
 * caller that passes the same cache each time gets the same state objects back for them (and can tell
 * what changed by identity instead of comparing thousands of entries).
 */
export type PeerStateCache = WeakMap<PeerDecision, PeerRouteState>;

/**
 * One entry per (peer, family) decision; a route that failed to program or whose prefix is held by a
 * foreign route makes its peer not ok. A peer named only in problems (no valid pod CIDR, overlapping
 * CIDRs, listed twice) gets one `skipped` entry, unless the only problem is this node's own.
 */
export function peerRouteStates(
  report: ReportPart,
  selfName: string,
  cache?: PeerStateCache,
): PeerRouteState[] {
  const broken = new Map<string, string>();
  for (const e of report.errors) {
    if (e.op !== 'remove')
      broken.set(`${e.route.family} ${e.route.dst}`, `route ${e.op} failed: ${e.error.message}`);
  }
  for (const c of report.conflicts) {
    broken.set(
      `${c.desired.family} ${c.desired.dst}`,
      c.existing.unreadable === true
        ? `${c.desired.dst} is held by a route trellis does not own: ${UNREADABLE_HOLDER}`
        : `${c.desired.dst} is held by a route trellis does not own (protocol ${c.existing.protocol ?? 'unknown'})`,
    );
  }
  for (const h of report.heldBack ?? []) {
    broken.set(`${h.route.family} ${h.route.dst}`, `route held back: ${h.reason}`);
  }
  const out: PeerRouteState[] = [];
  for (const d of report.decisions) {
    const cached = broken.size === 0 ? cache?.get(d) : undefined;
    if (cached !== undefined) {
      out.push(cached);
      continue;
    }
    const family = String(d.family) as '4' | '6';
    let state: PeerRouteState;
    if (d.path === 'unreachable') {
      state = { peer: d.node, family, path: d.path, ok: false, reason: d.reason };
    } else {
      const reasons = d.podCIDRs.map((c) => broken.get(`${d.family} ${c}`)).filter((r) => r !== undefined);
      state =
        reasons.length === 0
          ? { peer: d.node, family, path: d.path, ok: true }
          : { peer: d.node, family, path: d.path, ok: false, reason: reasons.join('; ') };
    }
    if (broken.size === 0) cache?.set(d, state);
    out.push(state);
  }
  const skipped = new Map<string, string[]>();
  const decided = report.problems.length === 0 ? undefined : new Set(report.decisions.map((d) => d.node));
  for (const p of report.problems) {
    if (p.node === selfName) continue;
    // A dual-stack peer routed in one family but without an InternalIP of the other.
    const noIp = /^no IPv([46]) InternalIP/.exec(p.problem);
    if (noIp !== null) {
      out.push({ peer: p.node, family: noIp[1] as '4' | '6', path: 'skipped', ok: false, reason: p.problem });
      continue;
    }
    if (decided?.has(p.node)) continue;
    skipped.set(p.node, [...(skipped.get(p.node) ?? []), p.problem]);
  }
  const stated = skipped.size === 0 ? undefined : new Set(out.map((s) => s.peer));
  for (const [peer, problems] of skipped) {
    if (stated?.has(peer)) continue;
    out.push({ peer, family: '', path: 'skipped', ok: false, reason: problems.join('; ') });
  }
  return out.sort(comparePeerStates);
}

/** The order peerRouteStates returns: by peer name, then family. (peer, family) is unique in one list. */
export function comparePeerStates(a: PeerRouteState, b: PeerRouteState): number {
  return a.peer === b.peer ? compareOrdinal(a.family, b.family) : a.peer < b.peer ? -1 : 1;
}

/** "node3/v4" labels of the peers not fully routed, for a compact report. */
export function missingPeers(states: readonly PeerRouteState[]): string[] {
  return states.filter((s) => !s.ok).map((s) => (s.family === '' ? s.peer : `${s.peer}/v${s.family}`));
}
