import type { LinkEvent, NetlinkEventsPort, RouteEvent, Subscription } from '../datapath/ports.ts';
import { RTM, RTNLGRP } from './constants.ts';
import { parseLink, parseRoute, routeTable } from './messages.ts';
import { RtnlSocket } from './socket.ts';

/**
 * Kernel change notifications for self-healing: the agent watches its own routes and re-adds one
 * that someone else deleted. Events only say "look again"; the consumer re-lists (level-triggered),
 * and an 'overflow' event (ENOBUFS: the kernel dropped notifications) means "resync everything".
 *
 * Like openNetlink, a subscription binds to the network namespace of the calling thread.
 */

export interface SubscribeOptions {
  /** Keep the event loop alive while subscribed (default false: the agent's server does that). */
  ref?: boolean;
}

function subscribe(
  groups: number[],
  onMessage: (type: number, payload: Buffer) => void,
  onOverflow: () => void,
  opts: SubscribeOptions,
): Subscription {
  const sock = new RtnlSocket({
    groups,
    onNotification: (msg) => onMessage(msg.type, msg.payload),
    onError: () => onOverflow(),
    ref: opts.ref === true,
  });
  return { close: () => sock.close() };
}

/** IPv4 and IPv6 route changes (RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE), all tables. */
export function subscribeRouteEvents(
  cb: (ev: RouteEvent) => void,
  opts: SubscribeOptions = {},
): Subscription {
  return subscribe(
    [RTNLGRP.IPV4_ROUTE, RTNLGRP.IPV6_ROUTE],
    (type, payload) => {
      if (type !== RTM.NEWROUTE && type !== RTM.DELROUTE) return;
      const route = parseRoute(payload);
      if (route === undefined) return;
      cb({ type: type === RTM.NEWROUTE ? 'add' : 'delete', route, table: routeTable(payload) });
    },
    () => cb({ type: 'overflow' }),
    opts,
  );
}

/** Link changes (RTNLGRP_LINK): creation, deletion and attribute/state changes (reported as 'add'). */
export function subscribeLinkEvents(cb: (ev: LinkEvent) => void, opts: SubscribeOptions = {}): Subscription {
  return subscribe(
    [RTNLGRP.LINK],
    (type, payload) => {
      if (type !== RTM.NEWLINK && type !== RTM.DELLINK) return;
      cb({ type: type === RTM.NEWLINK ? 'add' : 'delete', link: parseLink(payload) });
    },
    () => cb({ type: 'overflow' }),
    opts,
  );
}

/** The port form, for injection into the agent. */
export const netlinkEvents: NetlinkEventsPort = {
  subscribeRouteEvents: (cb) => subscribeRouteEvents(cb),
  subscribeLinkEvents: (cb) => subscribeLinkEvents(cb),
};
