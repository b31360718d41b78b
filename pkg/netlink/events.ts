import { Protocol } from 'netlink/dist/constants.js';
import type {
  DeletedEntry,
  LinkEvent,
  LinkEventInterest,
  NeighbourDeletion,
  NftablesEvent,
  RouteEvent,
  RouteEventInterest,
  Subscription,
} from '../datapath/ports.ts';
import { AF, NDA, RTM, RTN, RTNLGRP } from './constants.ts';
import { bytesToIp } from './ip.ts';
import { parseFdb, parseLink, parseRoute, routeTable } from './messages.ts';
import { parseNexthop } from './nexthop-messages.ts';
import { NFNLGRP_NFTABLES, nftablesSkipRule, parseNftablesMessage } from './nft-messages.ts';
import { compileSkipFilters } from './skip-filter.ts';
import { RtnlSocket, type SocketFilter, type SocketProbe, type SocketWants } from './socket.ts';
import { compileAcceptFilter, type FilterClause, NLMSG_HDRLEN } from './socket-filter.ts';
import { decodeAttrs, i32le, u32le } from './wire.ts';

/**
 * Kernel change notifications for self-healing: the agent watches its own routes and re-adds one
 * that someone else deleted. Events only say "look again"; the consumer re-lists (level-triggered),
 * and an 'overflow' event (the kernel dropped notifications) means "resync everything".
 *
 * Like openNetlink, a subscription binds to the network namespace of the calling thread.
 *
 * Use pkg/netns createNetlinkEvents() (or pass its prepareFd): without NETLINK_NO_ENOBUFS on the
 * socket, a dropped notification makes netlink@0.3.0 abort the process (see socket.ts). With it,
 * the kernel drops silently and counts the drop; overflow is then detected from that counter
 * (the probe prepareFd returns), checked within BATCH_CHECK_MS of any notification read and every
 * IDLE_DROP_CHECK_MS. A notification that cannot be parsed is reported as an overflow too: the
 * consumer resyncs.
 */

/**
 * A full queue is the usual drop, and its backlog is read, so the check after a batch sees it. With
 * nothing queued the kernel drops (and counts) only when it cannot copy a notification for this
 * socket: the idle check is for that, and shares one timer among all subscriptions (one each, a
 * second apart, woke the agent four times a second; on a VM each wakeup costs most of a millisecond
 * of CPU). A notification the kernel cannot allocate at all is reported by netlink_set_err, which
 * skips NETLINK_NO_ENOBUFS sockets and counts nothing: what that misses waits for the periodic
 * full pass (--resync-seconds), the agent's backstop for any event it never saw.
 */
const IDLE_DROP_CHECK_MS = 5000;
const BATCH_CHECK_MS = 50;

const idleChecks = new Set<() => void>();
let idleTimer: NodeJS.Timeout | undefined;

function addIdleCheck(check: () => void): void {
  idleChecks.add(check);
  if (idleTimer !== undefined) return;
  idleTimer = setInterval(() => {
    for (const c of idleChecks) c();
  }, IDLE_DROP_CHECK_MS);
  idleTimer.unref();
}

function removeIdleCheck(check: () => void): void {
  idleChecks.delete(check);
  if (idleChecks.size > 0 || idleTimer === undefined) return;
  clearInterval(idleTimer);
  idleTimer = undefined;
}

export interface SubscribeOptions {
  /** Keep the event loop alive while subscribed (default false: the agent's server does that). */
  ref?: boolean;
  /** SO_RCVBUF request (default 4 MiB, capped by net.core.rmem_max unless prepareFd forces more). */
  recvBufferSize?: number;
  /**
   * See SocketOptions.prepareFd; pkg/netns sets NETLINK_NO_ENOBUFS and SO_RCVBUFFORCE here, and
   * attaches the filter an interest compiles to.
   */
  prepareFd?: (fd: number, wants: SocketWants) => SocketProbe | undefined;
}

// Offsets in a notification of the fields the filters look at (struct rtmsg, struct nhmsg).
const RTM_TABLE = NLMSG_HDRLEN + 4;
const RTM_PROTOCOL = NLMSG_HDRLEN + 5;
const RTM_TYPE = NLMSG_HDRLEN + 7;
const NHM_PROTOCOL = NLMSG_HDRLEN + 2;
/** ifinfomsg: family (1), pad (1), type (2), then the index (4), flags (4) and change mask (4). */
const IFI_INDEX = NLMSG_HDRLEN + 4;
const IFI_FLAGS = NLMSG_HDRLEN + 8;
const IFI_CHANGE = NLMSG_HDRLEN + 12;
const IFF_UP = 0x1;
/**
 * In a change mask only when the kernel closes a link itself (dev_close_many: IFF_UP | IFF_RUNNING),
 * as it does right before deleting one; `ip link set down` changes IFF_UP alone.
 */
const IFF_RUNNING = 0x40;
/** ndmsg: family (1), pads (3), the index (4), then the state (2). */
const NDM_STATE = NLMSG_HDRLEN + 8;
const NUD_NOARP = 0x40;
const ROUTE_TYPE = { unicast: RTN.UNICAST, blackhole: RTN.BLACKHOLE, local: RTN.LOCAL } as const;

/** The socket filter that keeps the route changes and nexthop deletions `interest` names. */
function routeEventFilter(interest: RouteEventInterest): Buffer {
  const clauses: FilterClause[] = [];
  for (const r of interest.routes) {
    const bytes = [
      ...(r.table === undefined ? [] : [{ offset: RTM_TABLE, value: r.table }]),
      ...(r.protocol === undefined ? [] : [{ offset: RTM_PROTOCOL, value: r.protocol }]),
      ...(r.type === undefined ? [] : [{ offset: RTM_TYPE, value: ROUTE_TYPE[r.type] }]),
    ];
    if (r.change !== 'delete') clauses.push({ type: RTM.NEWROUTE, bytes });
    if (r.change !== 'add') clauses.push({ type: RTM.DELROUTE, bytes });
  }
  if (interest.nexthopDeletions !== undefined) {
    const protocol = interest.nexthopDeletions.protocol;
    clauses.push({ type: RTM.DELNEXTHOP, bytes: [{ offset: NHM_PROTOCOL, value: protocol }] });
  }
  return compileAcceptFilter(clauses);
}

/** The socket filter that keeps the link changes `interest` names. */
function linkEventFilter(interest: LinkEventInterest): Buffer {
  return compileAcceptFilter(
    interest.changes.flatMap((c) => {
      const type = c === 'delete' ? RTM.DELLINK : RTM.NEWLINK;
      // Set down: IFF_UP among the changed flags and not among the flags. Not a new link's (made
      // down, announced with every flag changed, IFF_RUNNING too), nor the close before a deletion
      // (its DELLINK follows): that was one more wakeup per pod DEL, for nothing.
      const down: Partial<FilterClause> =
        c !== 'down'
          ? {}
          : {
              wordBits: [
                { offset: IFI_CHANGE, mask: IFF_UP },
                { offset: IFI_CHANGE, mask: IFF_RUNNING, clear: true },
                { offset: IFI_FLAGS, mask: IFF_UP, clear: true },
              ],
            };
      if (interest.links === undefined) return [{ type, ...down }];
      return interest.links.map((index) => ({ type, words: [{ offset: IFI_INDEX, value: index }], ...down }));
    }),
  );
}

/** An RTM_NEWLINK payload that set its link down (linkEventFilter's 'down', read in JS). */
function setDown(payload: Buffer): boolean {
  const change = u32le(payload, IFI_CHANGE - NLMSG_HDRLEN);
  const flags = u32le(payload, IFI_FLAGS - NLMSG_HDRLEN);
  return (change & IFF_UP) !== 0 && (change & IFF_RUNNING) === 0 && (flags & IFF_UP) === 0;
}

function subscribe<E>(
  groups: { required: number[]; optional?: number[]; protocol?: number },
  parse: (type: number, payload: Buffer, portid: number) => E | undefined,
  cb: (ev: E | { type: 'overflow' }) => void,
  opts: SubscribeOptions,
  filter: SocketFilter | undefined,
): Subscription {
  const onOverflow = (): void => cb({ type: 'overflow' });
  const sock = new RtnlSocket({
    ...(groups.protocol === undefined ? {} : { protocol: groups.protocol }),
    ...(filter === undefined ? {} : { filter }),
    groups: groups.required,
    ...(groups.optional === undefined ? {} : { optionalGroups: groups.optional }),
    onNotification: (msg) => {
      let ev: E | undefined;
      try {
        ev = parse(msg.type, msg.payload, msg.pid);
      } catch {
        onOverflow();
        return;
      }
      if (ev !== undefined) cb(ev);
    },
    onError: onOverflow,
    ref: opts.ref === true,
    ...(opts.recvBufferSize !== undefined ? { recvBufferSize: opts.recvBufferSize } : {}),
    ...(opts.prepareFd !== undefined ? { prepareFd: opts.prepareFd } : {}),
  });
  const probe = sock.probe?.drops?.bind(sock.probe);
  let drops = probe?.();
  let lastCheck = performance.now();
  const checkDrops = (): void => {
    lastCheck = performance.now();
    const now = probe?.();
    if (now === undefined) return;
    if (drops !== undefined && now > drops) onOverflow();
    drops = now;
  };
  addIdleCheck(checkDrops);
  // While notifications flow, look at the counter every BATCH_CHECK_MS instead of once per datagram,
  // and once more after the last batch.
  let trailing: NodeJS.Timeout | undefined;
  sock.onBatchEnd = () => {
    if (performance.now() - lastCheck >= BATCH_CHECK_MS) checkDrops();
    else
      trailing ??= setTimeout(() => {
        trailing = undefined;
        checkDrops();
      }, BATCH_CHECK_MS).unref();
  };
  return {
    close: () => {
      removeIdleCheck(checkDrops);
      clearTimeout(trailing);
      sock.close();
    },
  };
}

/**
 * IPv4 and IPv6 route changes (RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE), all tables, and deleted
 * nexthop objects (RTNLGRP_NEXTHOP; a kernel without them has no such group to join: then none).
 * With an interest, the kernel drops the others (when opts.prepareFd attaches the filter).
 */
export function subscribeRouteEvents(
  cb: (ev: RouteEvent) => void,
  opts: SubscribeOptions = {},
  interest?: RouteEventInterest,
): Subscription {
  return subscribe<RouteEvent>(
    { required: [RTNLGRP.IPV4_ROUTE, RTNLGRP.IPV6_ROUTE], optional: [RTNLGRP.NEXTHOP] },
    (type, payload) => {
      if (type === RTM.DELNEXTHOP) {
        const nh = parseNexthop(payload);
        return nh === undefined ? undefined : { type: 'nexthop-deleted', id: nh.id, protocol: nh.protocol };
      }
      if (type !== RTM.NEWROUTE && type !== RTM.DELROUTE) return undefined;
      let nexthopId: number | undefined;
      // Routes RouteInfo cannot express come by key: enough to see one take or leave a prefix.
      const route = parseRoute(
        payload,
        (id) => {
          nexthopId = id;
        },
        true,
      );
      if (route === undefined) return undefined;
      const change = type === RTM.NEWROUTE ? 'add' : 'delete';
      return nexthopId === undefined
        ? { type: change, route, table: routeTable(payload) }
        : { type: change, route, table: routeTable(payload), nexthopId };
    },
    cb,
    opts,
    interest === undefined ? undefined : routeEventFilter(interest),
  );
}

/**
 * Link changes (RTNLGRP_LINK): creation, deletion and attribute/state changes (reported as 'add').
 * With an interest, the kernel drops the others (when opts.prepareFd attaches the filter).
 */
export function subscribeLinkEvents(
  cb: (ev: LinkEvent) => void,
  opts: SubscribeOptions = {},
  interest?: LinkEventInterest,
): Subscription {
  return subscribe<LinkEvent>(
    { required: [RTNLGRP.LINK] },
    (type, payload) => {
      if (type === RTM.DELLINK) return { type: 'delete', link: parseLink(payload) };
      if (type !== RTM.NEWLINK || payload.length < 16) return undefined;
      return setDown(payload)
        ? { type: 'add', link: parseLink(payload), wentDown: true }
        : { type: 'add', link: parseLink(payload) };
    },
    cb,
    opts,
    interest === undefined ? undefined : linkEventFilter(interest),
  );
}

/**
 * Neighbour and FDB entries deleted on `links` (RTNLGRP_NEIGH, RTM_DELNEIGH: ndmsg's ifindex sits where
 * ifinfomsg's does); the kernel drops every other neighbour notification (when opts.prepareFd attaches
 * the filter), so ARP and NDP churn on the node's other links never reaches JS. Deletions of entries
 * in the NOARP state are dropped too: those are the kernel's own (the multicast addresses a device's
 * MLD reports and router solicitations went to, aged out a minute after the device came up: each
 * woke a full pass at 5,000 nodes for nothing). An entry deleted by hand is announced FAILED, one
 * flushed with its link keeps its state (permanent, for what the overlay writes).
 */
export function subscribeNeighbourDeletions(
  cb: (ev: NeighbourDeletion) => void,
  opts: SubscribeOptions,
  links: readonly number[],
): Subscription {
  return subscribe<NeighbourDeletion>(
    { required: [RTNLGRP.NEIGH] },
    (type, payload) => {
      if (type !== RTM.DELNEIGH || payload.length < 8) return undefined;
      const ifindex = i32le(payload, 4);
      const entry = payload.length >= 12 ? deletedEntry(payload, ifindex) : undefined;
      return { type: 'deleted', ifindex, family: payload[0]!, ...(entry === undefined ? {} : { entry }) };
    },
    cb,
    opts,
    compileAcceptFilter(
      links.map((index) => ({
        type: RTM.DELNEIGH,
        words: [{ offset: IFI_INDEX, value: index }],
        notHalfwords: [{ offset: NDM_STATE, value: NUD_NOARP }],
      })),
    ),
  );
}

/**
 * What a neighbour deletion names: an FDB entry as parseFdb reads it, a neighbour by NDA_DST alone (a
 * neighbour deleted by hand is announced FAILED, without the NDA_LLADDR parseNeighbour needs).
 */
function deletedEntry(payload: Buffer, ifindex: number): DeletedEntry | undefined {
  if (payload[0] === AF.BRIDGE) return parseFdb(payload);
  const dst = decodeAttrs(payload, 12).get(NDA.DST);
  return dst === undefined || (dst.length !== 4 && dst.length !== 16)
    ? undefined
    : { ifindex, address: bytesToIp(dst) };
}

/**
 * nf_tables changes in the namespace (NETLINK_NETFILTER, NFNLGRP_NFTABLES): object changes and a
 * 'generation' event after each committed transaction (nft-messages.ts). With `table`, the kernel
 * drops datagrams made only of other tables' set element changes (when opts.prepareFd attaches the
 * filter): kube-proxy's or firewalld's churn never reaches JS (nftablesSkipRule).
 */
export function subscribeNftablesEvents(
  cb: (ev: NftablesEvent | { type: 'overflow' }) => void,
  opts: SubscribeOptions = {},
  table?: { family: number; name: string },
): Subscription {
  return subscribe<NftablesEvent>(
    { required: [NFNLGRP_NFTABLES], protocol: Protocol.NETFILTER },
    parseNftablesMessage,
    cb,
    opts,
    table === undefined ? undefined : compileSkipFilters(nftablesSkipRule(table.family, table.name)),
  );
}
