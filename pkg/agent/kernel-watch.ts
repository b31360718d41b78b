import type { LinkEventInterest, RouteEventInterest, RouteInfo } from '../datapath/ports.ts';
import { TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import { isOwnedRoute, MAIN_TABLE } from '../routes/diff.ts';

// Which kernel notifications the agent's self-healing watch (Agent.watchOwnDevicesAndRoutes) acts on.

/** rtm_protocol RTPROT_KERNEL: routes the kernel installs for an interface address. */
const RTPROT_KERNEL = 2;

/** The kernel's route for a subnet connected through an address (not IPv6 link-local, main table only). */
export function isConnectedSubnetRoute(r: RouteInfo, table: number): boolean {
  if (table !== MAIN_TABLE || r.protocol !== RTPROT_KERNEL || (r.type ?? 'unicast') !== 'unicast')
    return false;
  return !r.dst.toLowerCase().startsWith('fe80:');
}

/**
 * A route change that is about one of the agent's own routes (isOwnedRoute: a gateway route or a
 * blackhole). With net.ipv4.nexthop_compat_mode=0 the kernel leaves the gateway out of the
 * notification of a route that names a nexthop object; of ours, only gateway routes name one
 * (pkg/netlink/nexthop-book.ts), so our protocol plus an object is enough.
 */
export function isOwnedRouteChange(route: RouteInfo, nexthopId: number | undefined): boolean {
  return isOwnedRoute(route) || (route.protocol === TRELLIS_ROUTE_PROTOCOL && nexthopId !== undefined);
}

/**
 * The notifications the watch acts on, for the kernel to drop the rest: every pod ADD and DEL would
 * otherwise wake the agent for a handful of link, local-table and pod-route notifications that it
 * parses only to ignore. A superset of the watch's own checks, which still run.
 */
export const WATCHED_ROUTES: RouteEventInterest = {
  routes: [
    { change: 'any', table: MAIN_TABLE, protocol: RTPROT_KERNEL, type: 'unicast' }, // isConnectedSubnetRoute
    { change: 'delete', protocol: TRELLIS_ROUTE_PROTOCOL }, // isOwnedRouteChange
  ],
  nexthopDeletions: { protocol: TRELLIS_ROUTE_PROTOCOL },
};
/** Deleted VXLAN devices (their routes go with them, unannounced for IPv4). */
export const WATCHED_LINKS: LinkEventInterest = { changes: ['delete'] };
