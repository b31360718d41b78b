import type { CreateVeth, NetlinkEventsPort, SetUpStep } from '../datapath/ports.ts';
import { errnoName } from '../errno.ts';
import {
  createVethVia,
  deleteLinkVia,
  type ExtendedNetlinkHandle,
  NetlinkError,
  openNetlink,
  type SocketFilter,
  type SocketProbe,
  type SocketWants,
  setUpVia,
  subscribeLinkEvents,
  subscribeNeighbourDeletions,
  subscribeNftablesEvents,
  subscribeRouteEvents,
} from '../netlink/index.ts';
import { connectToKernel } from './kernel-peer.ts';
import {
  type CallResult,
  getLibc,
  NETLINK_CAP_ACK,
  NETLINK_NO_ENOBUFS,
  SK_MEMINFO_DROPS,
  SO_MEMINFO,
  SO_RCVBUFFORCE,
  SOL_NETLINK,
  SOL_SOCKET,
} from './libc.ts';
import { type OffThreadNetlink, openOffThreadNetlink } from './off-thread-netlink.ts';

/**
 * Socket options the `netlink` package cannot set, applied through its prepareFd hook.
 *
 * The package aborts the whole process when the kernel drops a message for one of its sockets
 * (see pkg/netlink/socket.ts), so event sockets get NETLINK_NO_ENOBUFS (drops are then counted,
 * not signalled; pkg/netlink polls the counter and turns an increase into an 'overflow' event)
 * and a receive buffer forced past net.core.rmem_max. The host's request socket gets a forced
 * buffer too, and NETLINK_CAP_ACK (error ACKs without a copy of the request).
 */

const REQUEST_RCVBUF = 2 << 20;
const EVENTS_RCVBUF = 16 << 20;

function setsockoptOrThrow(r: CallResult, what: string): void {
  if (r.value !== 0) throw new NetlinkError(errnoName(r.errno), `setsockopt ${what}`);
}

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  setsockoptOrThrow(getLibc().setsockoptInt(fd, level, name, value), what);
}

/** The first program the kernel takes; past ENOMEM (the socket's option memory) the next, shorter one. */
function attachFirstTaken(fd: number, filter: SocketFilter): void {
  const programs: readonly Buffer[] = Buffer.isBuffer(filter) ? [filter] : filter;
  for (const [i, program] of programs.entries()) {
    const r = getLibc().attachFilter(fd, program);
    if (r.value === 0) return;
    if (errnoName(r.errno) !== 'ENOMEM' || i === programs.length - 1)
      setsockoptOrThrow(r, 'SO_ATTACH_FILTER');
  }
}

/** For request sockets (nothing to probe later). */
export function prepareRequestSocket(fd: number): undefined {
  connectToKernel(fd);
  setInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, REQUEST_RCVBUF, 'SO_RCVBUFFORCE');
  setInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1, 'NETLINK_CAP_ACK');
  return undefined;
}

/**
 * For event sockets; returns the probe pkg/netlink polls for drops (SO_MEMINFO reads the socket's
 * own counter, whatever namespace the thread is in when it asks). The socket joins its groups only
 * after this returns, so with a filter no unwanted notification is ever queued.
 */
export function prepareEventSocket(
  fd: number,
  wants: SocketWants = {},
  recvBuffer = EVENTS_RCVBUF,
): SocketProbe {
  connectToKernel(fd);
  if (wants.filter !== undefined) attachFirstTaken(fd, wants.filter);
  setInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, recvBuffer, 'SO_RCVBUFFORCE');
  setInt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, 1, 'NETLINK_NO_ENOBUFS');
  const meminfo = Buffer.alloc(4 * (SK_MEMINFO_DROPS + 1));
  return {
    drops: () => {
      const r = getLibc().getsockopt(fd, SOL_SOCKET, SO_MEMINFO, meminfo);
      return r.value === 0 ? meminfo.readUInt32LE(4 * SK_MEMINFO_DROPS) : undefined;
    },
  };
}

/**
 * openNetlink with the request-socket options: use this for the agent's host handle. Its deleteLink
 * and createVeth go through sockets sent from other threads (off-thread-netlink.ts): the kernel
 * holds a veth deletion for 15-33 ms and a creation for ~0.7 ms inside the sending call, and the
 * agent's JS thread must keep serving meanwhile (a creation asked for `inline` is sent on it: see
 * NetlinkHandle.createVeth). One socket each, so a pod's creation never queues behind another
 * pod's deletion; and one more for the deletions nobody waits for (deleteLinkInBackground), so an
 * ADD's own deletion never queues behind a node drain's. setUp (a pod's host end, a fraction of a millisecond in the kernel) goes through
 * a third, sent on the JS thread and answered in the same turn. Open it on the JS thread in the
 * host namespace (outside withNetns).
 */
export function openHostNetlink(): ExtendedNetlinkHandle {
  const handle = openNetlink({ prepareFd: prepareRequestSocket });
  // (The handle's socket set-up above needs libc already.) A socket that cannot be opened (EMFILE,
  // ENOBUFS) fails the open, and the ones opened before it are closed: falling back quietly to the
  // handle's own blocking methods left veth deletions on the JS thread for good.
  const opened: OffThreadNetlink[] = [];
  try {
    for (let i = 0; i < 4; i++) opened.push(openOffThreadNetlink());
  } catch (err) {
    for (const s of opened) s.close();
    handle.close();
    throw err;
  }
  const [deleting, deletingInBackground, creating, configuring] = opened as [
    OffThreadNetlink,
    OffThreadNetlink,
    OffThreadNetlink,
    OffThreadNetlink,
  ];
  const close = handle.close.bind(handle);
  return Object.assign(handle, {
    deleteLink: (index: number) => deleteLinkVia(deleting.exchange, index),
    deleteLinkInBackground: (index: number) => deleteLinkVia(deletingInBackground.exchange, index),
    createVeth: (spec: CreateVeth, opts?: { inline?: boolean }) =>
      createVethVia(opts?.inline === true ? creating.exchangeInline : creating.exchange, spec),
    setUp: (steps: readonly SetUpStep[]) => setUpVia(configuring.exchangeInline, steps),
    close: () => {
      deleting.close();
      deletingInBackground.close();
      creating.close();
      configuring.close();
      close();
    },
  });
}

/**
 * Route and link change subscriptions in the calling thread's namespace, safe against bursts
 * (the agent's NetlinkEventsPort). Call inside withNetns to watch another namespace.
 */
export function createNetlinkEvents(): NetlinkEventsPort {
  return {
    subscribeRouteEvents: (cb, interest) =>
      subscribeRouteEvents(cb, { prepareFd: prepareEventSocket }, interest),
    subscribeLinkEvents: (cb, interest) =>
      subscribeLinkEvents(cb, { prepareFd: prepareEventSocket }, interest),
    subscribeNftablesEvents: (cb, table) =>
      subscribeNftablesEvents(cb, { prepareFd: prepareEventSocket }, table),
    subscribeNeighbourDeletions: (cb, links) =>
      subscribeNeighbourDeletions(cb, { prepareFd: prepareEventSocket }, links),
  };
}
