/**
 * The admin socket's JSON documents (/status, /routes, /leases), built from what the agent holds by
 * pure functions. The CLI reads the same types back, so the wire format has one definition.
 */
import type { AgentRouteState, AgentSnapshot } from '../agent/agent.ts';
import type { ForwardFirewallState } from '../agent/forward-firewall.ts';
import type { WatchState } from '../agent/operator-view.ts';
import { hostVethName } from '../datapath/names.ts';
import type { LinkInfo, RouteInfo } from '../datapath/ports.ts';
import type { Lease } from '../ipam/index.ts';
import { diffRoutes, routeKey } from '../routes/diff.ts';
import type { PeerDecision, Problem } from '../routes/types.ts';

export interface StatusView {
  node: string;
  version: string;
  runtime: string;
  standalone: boolean;
  mode: string;
  mtu: number;
  /** Why pods cannot get `mtu` (IPv6 needs 1280); absent when they can, and from older agents. */
  mtuProblem?: string;
  /** Below `mtu` when traffic leaving the node is encapsulated. */
  routeMtu?: number;
  podCIDRs: string[];
  /** This node's InternalIPs as the agent knows them; absent from older agents. */
  internalIPs?: string[];
  /** The agent serves CNI ADD (and STATUS). */
  ready: boolean;
  notReadyReason?: string;
  /**
   * The readiness probe's verdict (/readyz): ready to serve, and the last reconcile pass and the Node
   * watch are fine. Absent from older agents.
   */
  readiness?: { ok: boolean; checks: Record<string, string> };
  socket: string;
  stateDir: string;
  cniConfDir: string;
  cniBinDir: string;
  /** false: the agent publishes no config list (--no-cni-config); absent when it does. */
  cniConfigPublished?: false;
  /** Config-list binaries missing or not running where the runtime runs them; absent when fine. */
  cniBinaryProblems?: { binary: string; problem: string }[];
  /**
   * Config files that sort before trellis's and so take new pods (from the first that does: a
   * meta-plugin such as Multus that hands pods on to trellis does not); absent when none does.
   */
  cniConfigShadowedBy?: string[];
  /** Veth pairs made as pod namespaces appear; absent when --netns-dir is off and from older agents. */
  preparedPairs?: { dir: string; watching: boolean; waiting: number };
  leases: number;
  /** Capacity as a decimal string: an IPv6 /64 does not fit a JSON number. */
  ipam: { family: 4 | 6; range: string; capacity: string; used: number }[];
  watch?: WatchState;
  /** Absent from older agents. */
  masquerade?: { enabled: boolean; noMasqueradeCIDRs: string[]; lastError?: string };
  /** Devices whose TCP SYNs the node clamps to the route MTU; absent from older agents and when none. */
  mssClamp?: string[];
  /** Why the kernel refused the clamp; absent when it did not. */
  mssClampRefused?: string;
  /** The host firewall's forward chains that drop pod traffic; absent from older agents. */
  forwardFirewall?: ForwardFirewallState;
}

/**
 * ok: in the kernel as desired. missing: desired, absent. differs: present with another gateway or
 * device. held: missing or differing, and held back by the agent while this node's InternalIP is off
 * its link (the row's `reason`). conflict: the prefix is held by a route trellis does not own. stale:
 * ours, no longer desired.
 */
export type RouteState = 'ok' | 'missing' | 'differs' | 'held' | 'conflict' | 'stale';

export interface RouteRow {
  family: 4 | 6;
  dst: string;
  /** "via 10.0.0.2 dev eth0" or "blackhole": what trellis wants (or, for stale, what is there). */
  want: string;
  /** What the kernel has for that prefix; '' when nothing. */
  have: string;
  state: RouteState;
  /** conflict: the holder is a route trellis cannot read (multipath, unreachable, prohibit, throw). */
  unreadable?: true;
  /** conflict: the holder's metric (priority), where the kernel reported one: IPv6 keys a route by it. */
  haveMetric?: number;
  /** held: what it waits for. */
  reason?: string;
}

export interface RoutesView {
  node: string;
  /** False while the agent has no list of Nodes with this one: nothing is judged stale then. */
  synced?: boolean;
  routes: RouteRow[];
  drift: number;
  problems: Problem[];
  peers: PeerDecision[];
}

export interface LeaseRow {
  containerId: string;
  ifname: string;
  podNamespace: string;
  podName: string;
  netns: string;
  addresses: string[];
  hostVeth: string;
  createdAt: string;
  /**
   * Whether `netns` is a live network namespace, as the agent sees it (its /proc, --host-proc): the
   * CLI's own view may differ (a cri-dockerd /proc/PID path). Absent when netns is '', from older
   * agents, and when the agent could not tell (netnsUnknown).
   */
  netnsAlive?: boolean;
  /** The agent could not tell whether `netns` is there (out of file descriptors or memory). */
  netnsUnknown?: true;
}

export interface LeasesView {
  node: string;
  leases: LeaseRow[];
  /** Attachments with a quarantined record the agent holds addresses and veths for (AgentSnapshot.held). */
  held?: { containerId: string; ifname: string; hostVeth: string }[];
  /**
   * Host veths being deleted (a DEL or GC released the lease first and deletes the pair after) or
   * whose attachment has a call in flight (AgentSnapshot.vethsInFlight): not orphans. Absent when
   * none, and from older agents.
   */
  vethsInFlight?: string[];
}

/** Whether the node is ready as its readiness probe sees it (older agents: as CNI ADD does). */
export function isReady(s: StatusView): boolean {
  return s.readiness?.ok ?? s.ready;
}

/** The readiness checks that fail, "check: why" each. */
export function failingReadiness(s: StatusView): string[] {
  if (s.readiness === undefined) return s.ready ? [] : [s.notReadyReason ?? 'no reason given'];
  return Object.entries(s.readiness.checks)
    .filter(([, v]) => !v.startsWith('ok'))
    .map(([k, v]) => `${k}: ${v}`);
}

export function statusView(
  s: AgentSnapshot,
  version: string,
  runtime: string,
  readiness?: { ok: boolean; checks: Record<string, string> },
): StatusView {
  return {
    node: s.node,
    version,
    runtime,
    standalone: s.standalone,
    mode: s.mode,
    mtu: s.mtu,
    ...(s.routeMtu === undefined || s.routeMtu === s.mtu ? {} : { routeMtu: s.routeMtu }),
    ...(s.mtuProblem === undefined ? {} : { mtuProblem: s.mtuProblem }),
    podCIDRs: s.podCIDRs,
    internalIPs: s.internalIPs,
    ready: s.ready,
    ...(s.notReadyReason === undefined ? {} : { notReadyReason: s.notReadyReason }),
    ...(readiness === undefined ? {} : { readiness }),
    socket: s.socket,
    stateDir: s.stateDir,
    cniConfDir: s.cniConfDir,
    cniBinDir: s.cniBinDir,
    ...(s.cniConfigPublished === false ? { cniConfigPublished: false as const } : {}),
    ...(s.cniBinaryProblems === undefined ? {} : { cniBinaryProblems: s.cniBinaryProblems }),
    ...(s.cniConfigShadowedBy === undefined ? {} : { cniConfigShadowedBy: s.cniConfigShadowedBy }),
    ...(s.preparedPairs === undefined ? {} : { preparedPairs: s.preparedPairs }),
    leases: s.leases.length,
    ipam: s.ipamUsage.map((u) => ({
      family: u.family,
      range: u.range,
      capacity: String(u.capacity),
      used: u.used,
    })),
    ...(s.watch === undefined ? {} : { watch: s.watch }),
    masquerade: s.masquerade,
    ...(s.mssClamp.length === 0 ? {} : { mssClamp: s.mssClamp }),
    ...(s.mssClampRefused === undefined ? {} : { mssClampRefused: s.mssClampRefused }),
    ...(s.forwardFirewall === undefined ? {} : { forwardFirewall: s.forwardFirewall }),
  };
}

function describe(r: RouteInfo, links: ReadonlyMap<number, string>): string {
  if (r.unreadable === true) return 'unreadable route'; // listed by key only (RouteFilter.unreadable)
  // ip route's own word order: the type first (ip route del blackhole DST proto N takes it back).
  if (r.type === 'blackhole') return r.protocol === undefined ? 'blackhole' : `blackhole proto ${r.protocol}`;
  const parts: string[] = [];
  if (r.gateway !== undefined && r.gateway !== '') parts.push(`via ${r.gateway}`);
  if (r.ifindex !== undefined) parts.push(`dev ${links.get(r.ifindex) ?? `#${r.ifindex}`}`);
  if (r.onlink === true) parts.push('onlink');
  if (r.protocol !== undefined) parts.push(`proto ${r.protocol}`);
  return parts.join(' ');
}

/** Desired vs programmed, one row per prefix, through the reconciler's own diff (same ownership rules). */
export function routesView(node: string, st: AgentRouteState): RoutesView {
  const links = new Map<number, string>(st.links.map((l: LinkInfo) => [l.index, l.name]));
  const diff = diffRoutes(st.desired, st.programmed);
  const byKey = new Map<string, RouteInfo>();
  for (const r of st.programmed) if (!byKey.has(routeKey(r))) byKey.set(routeKey(r), r);
  const missing = new Set(diff.add.map(routeKey));
  const differs = new Set(diff.replace.map(routeKey));
  const conflicts = new Map(diff.conflicts.map((c) => [routeKey(c.desired), c]));
  const held = new Map((st.held ?? []).map((h) => [h.key, h.reason]));
  const rows: RouteRow[] = [];
  for (const d of st.desired) {
    const k = routeKey(d);
    const conflict = conflicts.get(k);
    const have = conflict?.existing ?? byKey.get(k);
    const off = missing.has(k) || differs.has(k);
    const reason = off ? held.get(k) : undefined;
    const state: RouteState =
      conflict !== undefined
        ? 'conflict'
        : reason !== undefined
          ? 'held'
          : missing.has(k)
            ? 'missing'
            : differs.has(k)
              ? 'differs'
              : 'ok';
    rows.push({
      family: d.family,
      dst: d.dst,
      want: describe(d, links),
      have: have === undefined ? '' : describe(have, links),
      state,
      ...(reason === undefined ? {} : { reason }),
      ...(conflict?.existing.unreadable === true ? { unreadable: true as const } : {}),
      ...(conflict?.existing.metric === undefined ? {} : { haveMetric: conflict.existing.metric }),
    });
  }
  const desiredKeys = new Set(st.desired.map(routeKey));
  // Without a list of Nodes every route of ours would look stale: the agent keeps them, and so do we.
  for (const r of st.synced ? diff.remove : []) {
    // Same-key duplicates of a desired route are cleanup, not drift an operator acts on.
    if (desiredKeys.has(routeKey(r))) continue;
    rows.push({ family: r.family, dst: r.dst, want: '', have: describe(r, links), state: 'stale' });
  }
  return {
    node,
    synced: st.synced,
    routes: rows,
    drift: rows.filter((r) => r.state !== 'ok').length,
    problems: st.problems,
    peers: st.decisions,
  };
}

/** The row's verdict on its namespace: none for a lease without a path; netnsUnknown when the agent has none. */
function aliveField(
  l: Lease,
  netnsAlive: ((lease: Lease) => boolean | undefined) | undefined,
): Pick<LeaseRow, 'netnsAlive' | 'netnsUnknown'> {
  if (netnsAlive === undefined || (l.netns ?? '') === '') return {};
  const alive = netnsAlive(l);
  return alive === undefined ? { netnsUnknown: true } : { netnsAlive: alive };
}

/**
 * `netnsAlive`: the agent's verdict on a lease's pod namespace (its path names the one ADD used);
 * undefined when it cannot tell.
 */
export function leasesView(s: AgentSnapshot, netnsAlive?: (lease: Lease) => boolean | undefined): LeasesView {
  const leases = s.leases
    .map(
      (l): LeaseRow => ({
        containerId: l.containerId,
        ifname: l.ifname,
        podNamespace: l.podNamespace ?? '',
        podName: l.podName ?? '',
        netns: l.netns ?? '',
        addresses: l.addresses.map((a) => a.address),
        hostVeth: hostVethName(l.containerId, l.ifname),
        createdAt: l.createdAt,
        ...aliveField(l, netnsAlive),
      }),
    )
    .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
  const held = (s.held ?? []).map((k) => ({ ...k, hostVeth: hostVethName(k.containerId, k.ifname) }));
  const inFlight = s.vethsInFlight ?? [];
  return {
    node: s.node,
    leases,
    ...(held.length > 0 ? { held } : {}),
    ...(inFlight.length > 0 ? { vethsInFlight: inFlight } : {}),
  };
}
