/**
 * Per-peer route state from one reconcile report: is every pod CIDR of every other node routed from
 * here? Pure. It feeds the `trellis_peer_route_ok` metric and the node's coverage annotation.
 */
import type { ReconcileReport } from '../routes/reconciler.ts';

export interface PeerRouteState {
  peer: string;
  /** '4' or '6'; '' for a peer skipped as a whole (no family decision was made). */
  family: '4' | '6' | '';
  /** direct: host-gw route via the peer's InternalIP; unreachable: no way found; skipped: invalid input. */
  path: string;
  ok: boolean;
  /** Why not ok. */
  reason?: string;
}

type ReportPart = Pick<ReconcileReport, 'decisions' | 'problems' | 'errors' | 'conflicts'>;

/**
 * One entry per (peer, family) decision; a route that failed to program or whose prefix is held by a
 * foreign route makes its peer not ok. A peer named only in problems (no valid pod CIDR, overlapping
 * CIDRs, listed twice) gets one `skipped` entry, unless the only problem is this node's own.
 */
export function peerRouteStates(report: ReportPart, selfName: string): PeerRouteState[] {
  const broken = new Map<string, string>();
  for (const e of report.errors) {
    if (e.op !== 'remove')
      broken.set(`${e.route.family} ${e.route.dst}`, `route ${e.op} failed: ${e.error.message}`);
  }
  for (const c of report.conflicts) {
    broken.set(
      `${c.desired.family} ${c.desired.dst}`,
      `${c.desired.dst} is held by a route trellis does not own (protocol ${c.existing.protocol ?? 'unknown'})`,
    );
  }
  const out: PeerRouteState[] = [];
  const decided = new Set<string>();
  for (const d of report.decisions) {
    decided.add(d.node);
    const family = String(d.family) as '4' | '6';
    if (d.path === 'unreachable') {
      out.push({ peer: d.node, family, path: d.path, ok: false, reason: d.reason });
      continue;
    }
    const reasons = d.podCIDRs.map((c) => broken.get(`${d.family} ${c}`)).filter((r) => r !== undefined);
    out.push(
      reasons.length === 0
        ? { peer: d.node, family, path: d.path, ok: true }
        : { peer: d.node, family, path: d.path, ok: false, reason: reasons.join('; ') },
    );
  }
  const skipped = new Map<string, string[]>();
  for (const p of report.problems) {
    if (p.node === selfName) continue;
    // A dual-stack peer routed in one family but without an InternalIP of the other.
    const noIp = /^no IPv([46]) InternalIP/.exec(p.problem);
    if (noIp !== null) {
      out.push({ peer: p.node, family: noIp[1] as '4' | '6', path: 'skipped', ok: false, reason: p.problem });
      continue;
    }
    if (decided.has(p.node)) continue;
    skipped.set(p.node, [...(skipped.get(p.node) ?? []), p.problem]);
  }
  for (const [peer, problems] of skipped) {
    if (out.some((s) => s.peer === peer)) continue;
    out.push({ peer, family: '', path: 'skipped', ok: false, reason: problems.join('; ') });
  }
  return out.sort((a, b) =>
    a.peer === b.peer ? a.family.localeCompare(b.family) : a.peer < b.peer ? -1 : 1,
  );
}

/** "node3/v4" labels of the peers not fully routed, for a compact report. */
export function missingPeers(states: readonly PeerRouteState[]): string[] {
  return states.filter((s) => !s.ok).map((s) => (s.family === '' ? s.peer : `${s.peer}/v${s.family}`));
}
