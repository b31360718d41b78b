import { parseCidr } from '../ip/cidr.ts';
import { defaultDst, gatewayFor } from './gateway.ts';
import { IPV6_MIN_MTU, type RouteInfo } from './ports.ts';

/**
 * The name a runtime gives a pod's primary interface (CRI: containerd, CRI-O). Any other CNI_IFNAME
 * is a secondary network's (Multus: net1, net2, ...), added to a pod that has its routes already.
 */
export const PRIMARY_IFNAME = 'eth0';

/** RT_TABLE_MAIN: the table a pod's default route is its default in (RouteInfo.table unset). */
const MAIN_TABLE = 254;

/** A route in the pod's namespace via its link-local gateway. */
export interface PodRoute {
  family: 4 | 6;
  dst: string;
  gateway: string;
  /** The path MTU (RTAX_MTU) when it is below the interface MTU. */
  mtu?: number;
}

export interface PodMtuPlan {
  /** The pod interface's MTU. */
  mtu: number;
  /** The MTU of traffic that leaves the node, which may be tunnelled; undefined when it is `mtu`. */
  routeMtu?: number;
  /** This node's pod CIDRs: pod-to-pod traffic that never leaves the node. */
  nodeCidrs?: readonly string[];
}

/**
 * The routes ADD puts in a pod and reports in its result. Every family the pod has gets a default
 * route via the link-local gateway. When traffic leaving the node may be encapsulated (routeMtu below
 * the interface MTU), the default route carries that smaller MTU and this node's own pod CIDRs get a
 * route at the interface's full MTU: traffic between pods of one node is never encapsulated, so it
 * need not pay for the overlay's headers (~6 % of throughput at 1430 against 1500 here). Cilium splits
 * its device and route MTUs the same way.
 */
export function podRoutes(families: readonly (4 | 6)[], plan: PodMtuPlan): PodRoute[] {
  const split = plan.routeMtu !== undefined && plan.routeMtu < plan.mtu ? plan.routeMtu : undefined;
  const out: PodRoute[] = [];
  for (const family of families) {
    // An IPv6 path MTU below 1280 makes the kernel refuse every datagram and ping sent on it (only TCP
    // gets through); and no IPv6 tunnel runs on an underlay that small (vxlan/plan.ts), so IPv6 leaves
    // the node unencapsulated, at the interface's MTU.
    const routeMtu = family === 6 && split !== undefined && split < IPV6_MIN_MTU ? undefined : split;
    const gateway = gatewayFor(family);
    const viaDefault: PodRoute = { family, dst: defaultDst(family), gateway };
    if (routeMtu !== undefined) viaDefault.mtu = routeMtu;
    out.push(viaDefault);
    if (routeMtu === undefined) continue;
    for (const cidr of plan.nodeCidrs ?? []) {
      if (parseCidr(cidr)?.family === family) out.push({ family, dst: cidr, gateway });
    }
  }
  return out;
}

/**
 * `wanted` without the default route of each family the pod has one of already: a route of its main
 * table (`present`, listed with its unreadable routes: a multipath default counts) to the default
 * prefix, whatever its metric, device or type. keepExisting is not enough for that: the kernel
 * refuses only a second route of the same destination and metric, so trellis's default (metric 0 for
 * IPv4, 1024 for IPv6) would go in beside another plugin's `default via … metric 100` and win. The
 * routes left out are the pod's, like a kept one: not reported, and not trellis's to remove.
 */
export function withoutHeldDefaults(wanted: readonly PodRoute[], present: readonly RouteInfo[]): PodRoute[] {
  const held = new Set(present.filter(isPodDefault).map((r) => r.family));
  return wanted.filter((r) => r.dst !== defaultDst(r.family) || !held.has(r.family));
}

/**
 * A route that is the pod's default route of its family: to the default prefix, in the main table
 * (another table, an sbr's or a VRF's, serves only the sources its rules send there), whatever its
 * metric, device or type.
 */
export function isPodDefault(r: RouteInfo): boolean {
  return (r.table ?? MAIN_TABLE) === MAIN_TABLE && r.dst === defaultDst(r.family);
}
