import type { LinkInfo, NetlinkHandle, RouteInfo } from '../datapath/ports.ts';
import type { Lease, RangeUsage } from '../ipam/index.ts';
import type { NodesEncoding } from '../k8s/transport.ts';
import { desiredRoutes } from '../routes/desired.ts';
import { MAIN_TABLE, routeKey } from '../routes/diff.ts';
import { readLocalLinks } from '../routes/local-links.ts';
import type { LocalLink, PeerDecision, PeerNode, Problem, RoutingMode } from '../routes/types.ts';
import type { DeviceState } from '../vxlan/device.ts';
import type { ClusterView } from './cluster.ts';
import { toPeerNode } from './controller.ts';
import type { ForwardFirewallState } from './forward-firewall.ts';

/** The Node watch as the operator sees it. */
export interface WatchState {
  restarts: number;
  relists: number;
  /** Node events that changed nothing the agent reads (kubelets' status reports), not acted on. */
  unchangedEvents?: number;
  resourceVersion: string;
  synced: boolean;
  /** Milliseconds since the API last answered the list or watch; absent before it first did (and from older agents). */
  silentMs?: number;
  /** The last failed list or watch of Nodes (when, ISO 8601, and why); absent until one fails. */
  lastFailure?: { at: string; error: string };
  /**
   * How the API server last answered the Node list or watch: protobuf, or JSON (a server or proxy
   * without protobuf, the client-node fallback, or after a protobuf answer the agent could not read).
   * Absent before the first answer (and from older agents).
   */
  encoding?: NodesEncoding;
}

/** What the agent holds, for the operator's view (admin socket, metrics, doctor). */
export interface AgentSnapshot {
  node: string;
  standalone: boolean;
  mode: string;
  /** The pod interfaces' MTU. */
  mtu: number;
  /** The MTU of pod traffic leaving the node (the pod's default routes); absent from older agents. */
  routeMtu?: number;
  /** Why the pod MTU cannot carry this node's IPv6 pod CIDR (below 1280); absent when it can. */
  mtuProblem?: string;
  podCIDRs: string[];
  /** This node's InternalIPs as the Node cache holds them (empty standalone or before the list). */
  internalIPs: string[];
  /** CNI ADD (and STATUS) is served: ready, or from the pod CIDRs remembered from the last run. */
  ready: boolean;
  notReadyReason: string | undefined;
  socket: string;
  stateDir: string;
  cniConfDir: string;
  cniBinDir: string;
  /** false: the agent publishes no config list (--no-cni-config; the runtime's config is someone else's). */
  cniConfigPublished?: false;
  /**
   * CNI binaries of the config list that are missing or do not run where the runtime runs them, at
   * the last publication; absent when they were fine. Until they are, the list is not published.
   */
  cniBinaryProblems?: { binary: string; problem: string }[];
  /**
   * Config files in the conf dir that sort before trellis's (the runtime takes the first), at the
   * last pass; absent when trellis's is first.
   */
  cniConfigShadowedBy?: string[];
  /**
   * Veth pairs made as pod namespaces appear (--netns-dir): the directory, whether it is watched (not
   * when it could not be, or the watch failed since), and the pairs waiting for their ADD. Absent when
   * --netns-dir is off.
   */
  preparedPairs?: { dir: string; watching: boolean; waiting: number };
  leases: Lease[];
  /**
   * Attachments whose lease record was quarantined and not rebuilt: IPAM holds their addresses and
   * the agent keeps their veths (their pods may be running) until a DEL or GC says otherwise.
   */
  held?: { containerId: string; ifname: string }[];
  /**
   * Host veths on their way out or with work in flight, sorted: those whose deletion is scheduled or
   * running (BackgroundDeleter: DEL and GC release the lease first and delete the pair after), and
   * those of attachments with a CNI call or the agent's own work under way (a DEL between its lease
   * release and that scheduling). Neither leased nor orphaned: doctor leaves them alone.
   */
  vethsInFlight?: string[];
  ipamUsage: RangeUsage[];
  /** The Node watch; undefined in standalone mode. */
  watch: WatchState | undefined;
  /** Where the pod MTU came from and the encapsulation overhead subtracted (docs/overlay.md). */
  mtuSource?: string;
  mtuOverhead?: number;
  /** The VXLAN devices after the last pass (auto and vxlan modes). */
  vxlan?: { family: 4 | 6; name: string; ifindex: number; mac: string; mtu: number }[];
  /** Devices whose forwarded TCP SYNs the node clamps to the route MTU (table-rules.ts); [] none. */
  mssClamp: string[];
  /** Why the kernel refused the clamp (mssClamp is then empty); absent otherwise. */
  mssClampRefused?: string;
  /** Whether pod traffic leaving the cluster is masqueraded, and the destinations that keep the pod address. */
  masquerade: {
    enabled: boolean;
    noMasqueradeCIDRs: string[];
    /** Why the nftables table could not be written the last time it was tried; absent once it was. */
    lastError?: string;
  };
  /** The host firewall's forward chains that drop pod traffic (forward-firewall.ts); absent unchecked. */
  forwardFirewall?: ForwardFirewallState;
}

/** Desired inter-node routes (computed now from the node cache) next to what the kernel has. */
export interface AgentRouteState {
  /**
   * False until the node cache has a full list with this node in it (the API unreachable at start):
   * the desired routes are unknown then, and no route of ours may be called stale.
   */
  synced: boolean;
  desired: RouteInfo[];
  /** Every route of the main table, both families (the diff decides which are ours). */
  programmed: RouteInfo[];
  problems: Problem[];
  decisions: PeerDecision[];
  links: LinkInfo[];
  /**
   * Desired routes the passes hold back while this node's InternalIP is off its link (routeKey, and
   * why): not written until it is back, or planned without it after the hold. Absent when none.
   */
  held?: { key: string; reason: string }[];
}

/** The planner's input and output recomputed from the cache, as the controller's passes see it. */
export async function computeRouteState(opts: {
  host: NetlinkHandle;
  cluster: ClusterView;
  nodeName: string;
  mode: RoutingMode;
  overlayDevices: readonly DeviceState[];
  /**
   * The links the passes plan with (RouteReconciler.linksToPlan): an InternalIP off its link for a
   * moment is planned as still there, and the view must plan as they do. Absent: the links as read.
   */
  linksToPlan?: (
    self: PeerNode,
    links: readonly LocalLink[],
  ) => { links: LocalLink[]; problems: Problem[]; waits: (route: RouteInfo) => string | undefined };
}): Promise<AgentRouteState> {
  const { host, cluster } = opts;
  const links = await host.listLinks();
  const [localLinks, v4, v6] = await Promise.all([
    readLocalLinks(host, links),
    host.listRoutes({ family: 4, table: MAIN_TABLE, unreadable: true }),
    host.listRoutes({ family: 6, table: MAIN_TABLE, unreadable: true }),
  ]);
  const self = cluster.get(opts.nodeName);
  const overlay = opts.overlayDevices.map((d) => ({ family: d.family, ifindex: d.ifindex, name: d.name }));
  const me = self === undefined ? undefined : toPeerNode(self);
  const planned =
    me === undefined || opts.linksToPlan === undefined
      ? { links: localLinks, problems: [], waits: () => undefined }
      : opts.linksToPlan(me, localLinks);
  const plan =
    me === undefined
      ? {
          routes: [],
          problems: [{ node: opts.nodeName, problem: 'this node is not known yet' }],
          decisions: [],
        }
      : desiredRoutes(me, cluster.list().map(toPeerNode), planned.links, {
          mode: opts.mode,
          overlay,
          explain: true,
        });
  const held = plan.routes.flatMap((r) => {
    const reason = planned.waits(r);
    return reason === undefined ? [] : [{ key: routeKey(r), reason }];
  });
  return {
    ...(held.length === 0 ? {} : { held }),
    synced: self !== undefined && cluster.hasSynced(),
    desired: plan.routes,
    programmed: [...v4, ...v6],
    problems: [...planned.problems, ...plan.problems],
    decisions: plan.decisions,
    links,
  };
}
