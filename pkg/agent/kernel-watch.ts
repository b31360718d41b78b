import { isHostVethName } from '../datapath/names.ts';
import type {
  LinkEventInterest,
  NetlinkEventsPort,
  RouteEventInterest,
  RouteInfo,
  Subscription,
} from '../datapath/ports.ts';
import { TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import { errorText } from '../error-text.ts';
import { DEFAULT_TABLE, type MasqSyncer, MasqTableWatch, NFPROTO_INET } from '../masq/index.ts';
import type { Logger } from '../observe/logger.ts';
import { isOwnedRoute, MAIN_TABLE } from '../routes/diff.ts';
import { isVxlanDeviceName } from '../vxlan/constants.ts';

/**
 * The agent's self-healing watch: kernel changes it did not make, put back by a full pass within a
 * debounce instead of at the next resync.
 */

/** Long enough to fold the burst one change makes (a device's routes, a flushed ruleset). */
const DEBOUNCE_MS = 20;

/** rtm_protocol RTPROT_KERNEL: routes the kernel installs for an interface address. */
const RTPROT_KERNEL = 2;

/** rtm_protocol RTPROT_RA: routes an IPv6 router advertisement installs (on-link prefixes, default routers). */
const RTPROT_RA = 9;

/**
 * The kernel's route for a subnet connected through an address (not IPv6 link-local, main table
 * only), or an on-link prefix someone else keeps (no gateway, not a default route: an RA's /64, a
 * DHCP client's), which makes a host-length address of that link a subnet (pkg/routes/on-link.ts).
 */
function isConnectedSubnetRoute(r: RouteInfo, table: number): boolean {
  if (table !== MAIN_TABLE || (r.type ?? 'unicast') !== 'unicast') return false;
  if (r.dst.toLowerCase().startsWith('fe80:')) return false;
  if (r.protocol === RTPROT_KERNEL) return true;
  const onLinkPrefix = r.gateway === undefined && !r.dst.endsWith('/0');
  return (
    onLinkPrefix &&
    (r.protocol === RTPROT_RA || (FOREIGN_PROTOCOLS as readonly number[]).includes(r.protocol ?? -1))
  );
}

/**
 * A route change that is about one of the agent's own routes (isOwnedRoute: a gateway route or a
 * blackhole). With net.ipv4.nexthop_compat_mode=0 the kernel leaves the gateway out of the
 * notification of a route that names a nexthop object; of ours, only gateway routes name one
 * (pkg/netlink/nexthop-book.ts), so our protocol plus an object is enough.
 */
function isOwnedRouteChange(route: RouteInfo, nexthopId: number | undefined): boolean {
  return isOwnedRoute(route) || (route.protocol === TRELLIS_ROUTE_PROTOCOL && nexthopId !== undefined);
}

/**
 * The protocols of the routes people write by hand or with a network manager: boot (`ip route` without
 * `proto`), static and dhcp. Routing daemons' (zebra, bird, bgp...) are left out on purpose: a daemon
 * loading a full table would flood the watch (and overflow it into full passes) for routes that
 * almost never touch a pod CIDR; a takeover by one shows at the next resync.
 */
const FOREIGN_PROTOCOLS = [3, 4, 16] as const;

/** A route someone else wrote (not the kernel's own, not ours): the watch asks concernsPrefix about it. */
function isForeignRoute(r: RouteInfo): boolean {
  return r.protocol !== TRELLIS_ROUTE_PROTOCOL && r.protocol !== RTPROT_KERNEL;
}

/**
 * The notifications the watch acts on, for the kernel to drop the rest: every pod ADD and DEL would
 * otherwise wake the agent for a handful of link, local-table and pod-route notifications that it
 * parses only to ignore. A superset of the watch's own checks, which still run.
 */
export const WATCHED_ROUTES: RouteEventInterest = {
  routes: [
    { change: 'any', table: MAIN_TABLE, protocol: RTPROT_KERNEL, type: 'unicast' }, // isConnectedSubnetRoute
    { change: 'any', table: MAIN_TABLE, protocol: RTPROT_RA, type: 'unicast' }, // isConnectedSubnetRoute: on-link
    { change: 'delete', protocol: TRELLIS_ROUTE_PROTOCOL }, // isOwnedRouteChange
    ...FOREIGN_PROTOCOLS.map((protocol) => ({ change: 'any' as const, table: MAIN_TABLE, protocol })), // isForeignRoute
  ],
  nexthopDeletions: { protocol: TRELLIS_ROUTE_PROTOCOL },
};
/** Deleted VXLAN devices, pod veths deleted or set down (their IPv4 routes go with them, unannounced). */
export const WATCHED_LINKS: LinkEventInterest = { changes: ['delete', 'down'] };

export interface KernelWatchDeps {
  events: NetlinkEventsPort;
  /** Undefined with masquerading off: the nftables table is then not watched. */
  masq:
    | (Pick<MasqSyncer, 'invalidate'> & Partial<Pick<MasqSyncer, 'committedBy' | 'wroteElements'>>)
    | undefined;
  /** A live route of ours was written through this nexthop object (the netlink handle's book). */
  routesNexthop(id: number): boolean;
  /** Whether the overlay deleted the link at this index itself (VxlanOverlay.deletedItself). */
  deletedItself?(index: number): boolean;
  /** A deletion a per-node step made itself (RouteReconciler.isOwnDeletion): not someone else's. */
  isOwnDeletion(route: RouteInfo): boolean;
  /** The prefix is one of ours or one a foreign route keeps from us (RouteReconciler.concernsPrefix). */
  concernsPrefix(route: RouteInfo): boolean;
  /**
   * Asks for a full pass, saying why (the pass's log line lists the reasons); `endsBackoff`: at once,
   * even while a failed or partial pass waits for its retry (NodeController.markDirty).
   */
  markDirty(why: string, endsBackoff?: boolean): void;
  /**
   * A route of ours without a gateway was deleted: a pod's host route (`ip route del` of a pod's /32
   * by hand), put back by the pods' host-end check rather than a full pass. Absent: left to the pass.
   */
  podRouteDeleted?(route: RouteInfo): void;
  /**
   * A pod host veth (`trl…`) was deleted or set down: DEL's deletion, or someone else's under a
   * running pod (an IPv4 route goes with its link, or with the link going down, silently, so this
   * is the only notice of it). Absent: left to the pass.
   */
  podVethLost?(name: string): void;
  log: Logger;
}

/**
 * A route or device of ours deleted by someone else is put back within the debounce, not at resync.
 * So is a prefix of ours that someone else's route took over (`ip route replace`: reported as a
 * conflict at once, never overwritten) or left again (`ip route del` of that route: ours is back).
 * Deletions a per-node step made itself are recognised and ignored; so are deleted nexthop objects no
 * live route of ours was written through (the handle deletes a route's object after the route, and
 * prunes only orphans). A connected subnet appearing or going (an address added to or removed from an
 * interface: the kernel's own route in the main table; an on-link prefix around a host-length
 * address: an RA's route) changes which peers host-gw reaches directly,
 * and per-node steps plan with the links of the last full pass, so it asks for a full pass too. The
 * masquerade table changed by someone else (`nft flush ruleset` on an nftables or firewalld restart,
 * say) goes the same way: a connection that starts meanwhile leaves unmasqueraded, and NAT is
 * decided on a connection's first packet only.
 */
export function watchKernel(deps: KernelWatchDeps): Subscription[] {
  let timer: NodeJS.Timeout | undefined;
  const reasons = new Set<string>();
  let urgent = false;
  /** Routes of ours someone else deleted within the burst: one warning for the burst, not one each. */
  const deleted: string[] = [];
  // `now`: what someone else took away is put back within the debounce even while the controller waits
  // out a backoff (up to 10 s: a pass partial for another reason). A connection started without its
  // NAT keeps that for its life.
  const markSoon = (why: string, now = false): void => {
    reasons.add(why);
    urgent ||= now;
    if (timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      if (deleted.length > 0) {
        deps.log.warn(
          { routes: deleted.slice(0, 5), count: deleted.length },
          'routes of ours were deleted by someone else (or went with their link); putting them back',
        );
        deleted.length = 0;
      }
      for (const r of reasons) deps.markDirty(r, urgent);
      reasons.clear();
      urgent = false;
    }, DEBOUNCE_MS);
  };
  const subscriptions = [
    // Deleting a device takes its routes with it without route notifications (IPv4): watch our VXLAN devices.
    deps.events.subscribeLinkEvents((ev) => {
      // Lost notifications may have held a device's deletion: a full pass finds out.
      if (ev.type === 'overflow') markSoon('link notifications lost');
      else if (ev.type === 'delete' && isVxlanDeviceName(ev.link.name))
        // Not in a hurry when the overlay deleted it itself (recreating or removing it): a pass that
        // does so at every try must not run at the debounce's pace through a backoff.
        markSoon('a VXLAN device was deleted', deps.deletedItself?.(ev.link.index) !== true);
      else if ((ev.type === 'delete' || ev.wentDown === true) && isHostVethName(ev.link.name))
        deps.podVethLost?.(ev.link.name);
    }, WATCHED_LINKS),
    deps.events.subscribeRouteEvents((ev) => {
      if (ev.type === 'overflow') {
        deps.masq?.invalidate();
        markSoon('route notifications lost');
        return;
      }
      if (ev.type === 'nexthop-deleted') {
        if (ev.protocol === TRELLIS_ROUTE_PROTOCOL && deps.routesNexthop(ev.id))
          markSoon('a nexthop of ours was deleted', true);
        return;
      }
      if (ev.route.unreadable === true) {
        // Only its key is known: it matters when it takes or leaves a prefix of ours (a conflict).
        if (isForeignRoute(ev.route) && deps.concernsPrefix({ ...ev.route, table: ev.table })) {
          markSoon(`a foreign route on ${ev.route.dst}`);
        }
        return;
      }
      if (isConnectedSubnetRoute(ev.route, ev.table)) {
        markSoon('a connected subnet changed');
        return;
      }
      if (isForeignRoute(ev.route)) {
        if (deps.concernsPrefix({ ...ev.route, table: ev.table }))
          markSoon(`a foreign route on ${ev.route.dst}`);
        return;
      }
      if (ev.type === 'add') return;
      if (!isOwnedRouteChange(ev.route, ev.nexthopId)) {
        if (ev.route.protocol === TRELLIS_ROUTE_PROTOCOL) deps.podRouteDeleted?.(ev.route);
        return;
      }
      if (deps.isOwnDeletion(ev.route)) return;
      // Routes that went with a VXLAN device the overlay deleted itself (recreating or removing it;
      // the kernel announces each IPv6 one): the pass that did it writes them again or plans them
      // away. Neither someone else's doing nor urgent, like the device's own deletion above.
      if (ev.route.ifindex !== undefined && deps.deletedItself?.(ev.route.ifindex) === true) {
        markSoon('a VXLAN device was deleted');
        return;
      }
      deleted.push(ev.route.dst);
      markSoon(`a route of ours to ${ev.route.dst} was deleted`, true);
    }, WATCHED_ROUTES),
  ];
  const masqTable = watchMasqTable(deps, markSoon);
  if (masqTable !== undefined) subscriptions.push(masqTable);
  return subscriptions;
}

function watchMasqTable(
  deps: KernelWatchDeps,
  markSoon: (why: string, now?: boolean) => void,
): Subscription | undefined {
  const { masq, events, log } = deps;
  if (masq === undefined || events.subscribeNftablesEvents === undefined) return undefined;
  const watch = new MasqTableWatch({
    ours: (portid) => masq.committedBy?.(portid),
    ourElements: (portid) => masq.wroteElements?.(portid) === true,
  });
  try {
    return events.subscribeNftablesEvents(
      (ev) => {
        if (ev.type === 'overflow')
          watch.reset(); // a transaction's notifications may be missing
        else if (!watch.feed(ev)) return;
        else
          log.warn(
            'the nftables table inet trellis (masquerade, MSS clamp) was changed by someone else; putting it back',
          );
        masq.invalidate();
        markSoon(
          ev.type === 'overflow' ? 'nftables notifications lost' : 'the nftables table was changed',
          true,
        );
      },
      { family: NFPROTO_INET, name: DEFAULT_TABLE },
    );
  } catch (err) {
    // Without the watch the periodic resync still restores the table.
    log.warn(
      { error: errorText(err) },
      'cannot watch nftables changes: a changed masquerade table is restored at the next resync',
    );
    return undefined;
  }
}
