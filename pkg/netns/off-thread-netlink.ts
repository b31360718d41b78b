import { closeSync } from 'node:fs';
import { endsReplyTo, errorFromErrno } from '../netlink/index.ts';
import { connectToKernel } from './kernel-peer.ts';
import {
  AF_NETLINK,
  type CallResult,
  getLibc,
  MSG_DONTWAIT,
  NETLINK_ROUTE,
  SOCK_CLOEXEC,
  SOCK_RAW,
} from './libc.ts';

/**
 * A rtnetlink socket whose requests are sent either from a thread other than the agent's one JS
 * thread (exchange) or on it with no trip through the event loop (exchangeInline).
 *
 * Why off the thread: the kernel carries out a netlink request inside the sending sendmsg(), and
 * some take long (deleting a veth pair waits 15-33 ms for RCU here). Sent through the agent's usual
 * socket, that wait froze every CNI call behind it. exchange's send runs on an ffi-rs thread.
 *
 * Why inline: for a request the kernel answers in a fraction of a millisecond (a pod's addresses
 * and routes), handing it to another thread and waking the JS thread for the answer costs more than
 * it saves; exchangeInline sends and reads the answer in the same turn, without waiting for the
 * event loop to see the socket readable (and behind whatever else became readable meanwhile).
 *
 * Either way the reply is queued in full when send returns (the kernel answers inside the same
 * call), so it is read without blocking. The socket belongs to the network namespace of the thread
 * that opens it, for its whole life, no matter which thread sends on it: open it on the JS thread,
 * outside any withNetns for the host's, inside one for a pod's.
 */
export interface OffThreadNetlink {
  /**
   * Sends one request datagram from another thread and returns what the kernel queued for it, up to
   * and including the datagram that acknowledges its LAST message (an NLM_F_ECHO request gets the
   * echo first; a failed earlier message's error comes before), as one buffer. One at a time.
   */
  exchange(request: Buffer): Promise<Buffer>;
  /** exchange, sent on the JS thread (queued behind an exchange in flight). */
  exchangeInline(request: Buffer): Promise<Buffer>;
  close(): void;
}

/**
 * Every recv lands here and is copied out at once (an ACK is 36 bytes, a link's echo ~1.5 KiB): recv
 * runs on the JS thread only, so one buffer serves every socket, where a fresh 64 KiB per recv was
 * ~0.25 MB of zeroed external memory per ADD for the garbage collector to account for.
 */
const replyBuffer = Buffer.allocUnsafe(64 * 1024);
const EAGAIN = 11;

export function openOffThreadNetlink(): OffThreadNetlink {
  const libc = getLibc();
  const opened = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (opened.value < 0) throw errorFromErrno(opened.errno, 'socket(AF_NETLINK, NETLINK_ROUTE)');
  const fd = opened.value;
  try {
    connectToKernel(fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  let closed = false;
  // Replies are matched by order: one request in flight, the next waits for it.
  let tail: Promise<unknown> = Promise.resolve();

  const readReply = (request: Buffer, sent: CallResult): Buffer => {
    if (sent.value < 0) throw errorFromErrno(sent.errno, 'send on the off-thread netlink socket');
    const ends = endsReplyTo(request);
    // The kernel queued the whole reply before send returned, so no recv here ever waits; a dump's
    // next part it makes inside the recv that reads the one before (netlink_recvmsg), up to NLMSG_DONE.
    const parts: Buffer[] = [];
    for (;;) {
      const got = libc.recv(fd, replyBuffer, MSG_DONTWAIT);
      if (got.value < 0) {
        if (got.errno === EAGAIN && parts.length > 0) break;
        throw errorFromErrno(got.errno, 'recv on the off-thread netlink socket');
      }
      const datagram = Buffer.from(replyBuffer.subarray(0, got.value));
      parts.push(datagram);
      if (ends(datagram)) break;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  };

  const queued = (run: () => Promise<Buffer>): Promise<Buffer> => {
    const next = tail.then(run, run);
    tail = next.catch(() => undefined);
    return next;
  };
  const open = (): void => {
    if (closed) throw new Error('off-thread netlink socket is closed');
  };

  return {
    exchange: (request) =>
      queued(async () => {
        open();
        return readReply(request, await libc.sendOffThread(fd, request));
      }),
    exchangeInline: (request) =>
      queued(async () => {
        open();
        return readReply(request, libc.send(fd, request));
      }),
    close() {
      if (closed) return;
      closed = true;
      // A send still in flight on the other thread keeps its own reference in the kernel.
      void tail.finally(() => closeSync(fd));
    },
  };
}
