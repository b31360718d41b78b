import type { LinkEventInterest, RouteEventInterest, RouteInfo } from '../datapath/ports.ts';
import { TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import { MAIN_TABLE } from '../routes/diff.ts';

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
 * The notifications the watch acts on, for the kernel to drop the rest: every pod ADD and DEL would
 * otherwise wake the agent for a handful of link, local-table and pod-route notifications that it
 * parses only to ignore. A superset of the watch's own checks, which still run.
 */
export const WATCHED_ROUTES: RouteEventInterest = {
  routes: [
    { change: 'any', table: MAIN_TABLE, protocol: RTPROT_KERNEL, type: 'unicast' }, // isConnectedSubnetRoute
    { change: 'delete', protocol: TRELLIS_ROUTE_PROTOCOL }, // isOwnedRoute
  ],
  nexthopDeletions: { protocol: TRELLIS_ROUTE_PROTOCOL },
};
/** Deleted VXLAN devices (their routes go with them, unannounced for IPv4). */
export const WATCHED_LINKS: LinkEventInterest = { changes: ['delete'] };
