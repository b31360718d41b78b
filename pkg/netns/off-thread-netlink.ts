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
  /** Sends one request datagram (asking for an ACK) and returns the reply datagram. One at a time. */
  exchange(request: Buffer): Promise<Buffer>;
  close(): void;
}

const REPLY_BUFFER = 64 * 1024;

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
    const reply = Buffer.alloc(REPLY_BUFFER);
    const got = libc.recv(fd, reply, MSG_DONTWAIT);
    if (got.value < 0) throw errorFromErrno(got.errno, 'recv on the off-thread netlink socket');
    return reply.subarray(0, got.value);
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
