/**
 * `trellis-agent coverage`: which nodes the pod network does not fully cover. Pure, over Node views.
 *
 * A node is a gap when
 *   - it has no pod CIDR (nothing to route to, the agent waits),
 *   - no trellis agent reported on it (no `trellis.dev/agent` annotation), its report is unreadable,
 *     older than `staleAfterMs` (the agent is probably not running), or says not ready,
 *   - its agent's latest reconcile pass failed or waits (its missing list is then that of its last good
 *     pass, and may be out of date),
 *   - some other node's fresh report lists it as missing: that peer has no working route to its pod
 *     CIDRs (unreachable with host-gw, a route that failed, a foreign route in the way).
 * What it cannot see: a peer whose own report is stale or absent vouches for nothing (that peer is
 * listed itself), and the per-peer lists are capped at MAX_MISSING names (the count stays exact).
 */
import { AGENT_ANNOTATION, type AgentReport, decodeReport, MAX_MISSING } from './node-report.ts';

export interface CoverageNode {
  name: string;
  podCIDRs: readonly string[];
  annotations: Readonly<Record<string, string>>;
}

export type AgentState = 'ready' | 'not-ready' | 'stale' | 'absent' | 'invalid';

export interface CoverageRow {
  node: string;
  podCIDRs: string[];
  agent: AgentState;
  version: string;
  heartbeat: string;
  /** Peers that reported no route to this node ("node1/v4"). */
  missingOn: string[];
  problems: { problem: string; fix: string }[];
}

export interface CoverageReport {
  ok: boolean;
  nodes: CoverageRow[];
  gaps: number;
}

export function coverage(nodes: readonly CoverageNode[], now: number, staleAfterMs: number): CoverageReport {
  const reports = new Map<string, AgentReport>();
  const rows: CoverageRow[] = [];
  for (const n of [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const row: CoverageRow = {
      node: n.name,
      podCIDRs: [...n.podCIDRs],
      agent: 'absent',
      version: '',
      heartbeat: '',
      missingOn: [],
      problems: [],
    };
    rows.push(row);
    if (n.podCIDRs.length === 0) {
      row.problems.push({
        problem: 'the node has no pod CIDR (spec.podCIDRs is empty)',
        fix: 'run kube-controller-manager with --allocate-node-cidrs=true and --cluster-cidr, or set spec.podCIDRs on the Node',
      });
    }
    const text = n.annotations[AGENT_ANNOTATION];
    if (text === undefined) {
      row.problems.push({
        problem: 'no trellis agent has reported on this node',
        fix: `check the DaemonSet pod: kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o wide --field-selector spec.nodeName=${n.name}`,
      });
      continue;
    }
    const decoded = decodeReport(text);
    if (!decoded.ok) {
      row.agent = 'invalid';
      row.problems.push({
        problem: decoded.problem,
        fix: `remove it (kubectl annotate node ${n.name} ${AGENT_ANNOTATION}-); the agent rewrites it`,
      });
      continue;
    }
    const r = decoded.report;
    row.version = r.version;
    row.heartbeat = r.heartbeat;
    const age = now - Date.parse(r.heartbeat);
    if (age > staleAfterMs) {
      row.agent = 'stale';
      row.problems.push({
        problem: `the agent's last report is ${Math.round(age / 60_000)} min old (limit ${Math.round(staleAfterMs / 60_000)} min): the agent is probably not running`,
        fix: `check the trellis pod on ${n.name} (kubectl -n kube-system get pods -o wide --field-selector spec.nodeName=${n.name}) and its logs`,
      });
      continue;
    }
    reports.set(n.name, r);
    if (r.ready) {
      row.agent = 'ready';
    } else {
      row.agent = 'not-ready';
      row.problems.push({
        problem: `the agent is not ready: ${r.reason ?? 'no reason given'}`,
        fix: `read the log of the trellis pod on ${n.name} (kubectl -n kube-system get pods -l app.kubernetes.io/name=trellis -o wide --field-selector spec.nodeName=${n.name}), or kubectl exec it and run trellis-agent doctor`,
      });
    }
    if (r.lastPass?.startsWith('stuck: ') === true) {
      row.problems.push({
        problem: `the agent's reconcile loop is stuck (${r.lastPass.slice('stuck: '.length)}): no Node change is applied on this node until it ends`,
        fix: `read the log of the trellis pod on ${n.name} ("reconcile loop stuck"); deleting the pod restarts the agent`,
      });
    } else if (r.lastPass !== undefined) {
      row.problems.push({
        problem: `the agent's last reconcile pass did not succeed (${r.lastPass}): the peers it reports unrouted are those of its last good pass`,
        fix: `read the log of the trellis pod on ${n.name} ("reconcile failed", "waiting before programming the node"), or kubectl exec it and run trellis-agent doctor`,
      });
    }
  }
  const byName = new Map(rows.map((r) => [r.node, r]));
  for (const [reporter, r] of reports) {
    for (const m of r.missing) {
      const slash = m.lastIndexOf('/v');
      const peer = slash > 0 ? m.slice(0, slash) : m;
      const family = slash > 0 ? m.slice(slash + 1) : '';
      byName.get(peer)?.missingOn.push(family === '' ? reporter : `${reporter}/${family}`);
    }
    if (r.peersMissing > r.missing.length) {
      byName.get(reporter)!.problems.push({
        problem: `reports ${r.peersMissing} peers without routes; only the first ${Math.min(r.missing.length, MAX_MISSING)} are named`,
        fix: `kubectl exec into the trellis pod on ${reporter} and run trellis-agent routes`,
      });
    }
  }
  for (const row of rows) {
    // A node without a pod CIDR has nothing to route to: its own finding says so already.
    if (row.missingOn.length === 0 || row.podCIDRs.length === 0) continue;
    row.problems.push({
      problem: `its pod CIDRs are not routed from ${row.missingOn.length} node(s): ${row.missingOn.join(', ')}`,
      fix: 'run trellis-agent routes (or doctor) in the trellis pod of those nodes: an unreachable InternalIP (not on a connected subnet for host-gw), a failed or conflicting route',
    });
  }
  const gaps = rows.filter((r) => r.problems.length > 0).length;
  return { ok: gaps === 0, nodes: rows, gaps };
}
