/**
 * The netlink adapter: the only importer of the `netlink` package. Implements NetlinkHandle
 * (pkg/datapath/ports.ts) over one rtnetlink socket per handle, plus VXLAN creation, pipelined
 * route bursts and change notifications.
 */

export type {
  CreateVxlan,
  LinkEvent,
  NetlinkEventsPort,
  RouteEvent,
  Subscription,
} from '../datapath/ports.ts';
export { ExistsError, errorFromErrno, LinkNotFoundError, NetlinkError } from './errors.ts';
export type { SubscribeOptions } from './events.ts';
export {
  subscribeLinkEvents,
  subscribeNeighbourDeletions,
  subscribeNftablesEvents,
  subscribeRouteEvents,
} from './events.ts';
export type { ExtendedNetlinkHandle } from './handle.ts';
export { type OpenNetlinkOptions, openNetlink } from './handle.ts';
export { NftSetWriter } from './nft-set-writer.ts';
export {
  createVethVia,
  deleteLinkVia,
  type Exchange,
  getLinkVia,
  listRoutesVia,
  setUpVia,
} from './off-thread-requests.ts';
export type { SocketFilter, SocketProbe, SocketWants } from './socket.ts';
export { endsReplyTo } from './wire.ts';
