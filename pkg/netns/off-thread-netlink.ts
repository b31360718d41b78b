import { closeSync } from 'node:fs';
import { errorFromErrno } from '../netlink/index.ts';
import { AF_NETLINK, getLibc, MSG_DONTWAIT, NETLINK_ROUTE, SOCK_CLOEXEC, SOCK_RAW } from './libc.ts';

/**
 * A rtnetlink socket whose requests are sent from a thread other than the agent's one JS thread.
 *
 * Why: the kernel carries out a netlink request inside the sending sendmsg(), and some take long
 * (deleting a veth pair waits 15-33 ms for RCU here). Sent through the agent's usual socket, that
 * wait froze every CNI call behind it. Here send() runs on an ffi-rs thread; the reply is already
 * queued when it returns (the kernel answers inside the same call), so it is read without blocking.
 *
 * The socket belongs to the network namespace of the thread that opens it, for its whole life, no
 * matter which thread sends on it: open it on the JS thread, outside any withNetns.
 */
export interface OffThreadNetlink {
  /**
   * Sends one request datagram (asking for an ACK) and returns what the kernel queued for it, up to
   * and including the datagram with the ACK (an NLM_F_ECHO request gets the echo first), as one
   * buffer. One at a time.
   */
  exchange(request: Buffer): Promise<Buffer>;
  close(): void;
}

const REPLY_BUFFER = 64 * 1024;
/** linux/netlink.h */
const NLMSG_ERROR = 2;
const NLMSG_HDRLEN = 16;
const EAGAIN = 11;

/** True when a reply datagram holds an NLMSG_ERROR message (an ACK or an error): the last one. */
function holdsAck(datagram: Buffer): boolean {
  for (let off = 0; off + NLMSG_HDRLEN <= datagram.length; ) {
    const len = datagram.readUInt32LE(off);
    if (datagram.readUInt16LE(off + 4) === NLMSG_ERROR) return true;
    if (len < NLMSG_HDRLEN) return false;
    off += (len + 3) & ~3;
  }
  return false;
}

export function openOffThreadNetlink(): OffThreadNetlink {
  const libc = getLibc();
  const opened = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (opened.value < 0) throw errorFromErrno(opened.errno, 'socket(AF_NETLINK, NETLINK_ROUTE)');
  const fd = opened.value;
  let closed = false;
  // Replies are matched by order: one request in flight, the next waits for it.
  let tail: Promise<unknown> = Promise.resolve();

  const once = async (request: Buffer): Promise<Buffer> => {
    if (closed) throw new Error('off-thread netlink socket is closed');
    const sent = await libc.sendOffThread(fd, request);
    if (sent.value < 0) throw errorFromErrno(sent.errno, 'send on the off-thread netlink socket');
    // The kernel queued the whole reply before send returned, so no recv here ever waits.
    const parts: Buffer[] = [];
    for (;;) {
      const reply = Buffer.alloc(REPLY_BUFFER);
      const got = libc.recv(fd, reply, MSG_DONTWAIT);
      if (got.value < 0) {
        if (got.errno === EAGAIN && parts.length > 0) break;
        throw errorFromErrno(got.errno, 'recv on the off-thread netlink socket');
      }
      const datagram = reply.subarray(0, got.value);
      parts.push(datagram);
      if (holdsAck(datagram)) break;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  };

  return {
    exchange(request) {
      const run = tail.then(
        () => once(request),
        () => once(request),
      );
      tail = run.catch(() => undefined);
      return run;
    },
    close() {
      if (closed) return;
      closed = true;
      // A send still in flight on the other thread keeps its own reference in the kernel.
      void tail.finally(() => closeSync(fd));
    },
  };
}
