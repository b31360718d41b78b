/**
 * The netlink adapter: the only importer of the `netlink` package. Implements NetlinkHandle
 * (pkg/datapath/ports.ts) over one rtnetlink socket per handle, plus VXLAN creation, pipelined
 * route bursts and change notifications.
 */
export { ExistsError, LinkNotFoundError, NetlinkError } from './errors.ts';
export type { LinkEvent, RouteEvent, SubscribeOptions, Subscription } from './events.ts';
export { subscribeLinkEvents, subscribeRouteEvents } from './events.ts';
export type { ExtendedNetlinkHandle } from './handle.ts';
export { openNetlink } from './handle.ts';
export type { CreateVxlan } from './messages.ts';
