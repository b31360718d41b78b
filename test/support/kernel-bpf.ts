import { closeSync } from 'node:fs';
import { AF_UNIX, getLibc, MSG_DONTWAIT } from '../../pkg/netns/libc.ts';

/**
 * The kernel's verdict on a classic BPF program for a packet: the program attached (SO_ATTACH_FILTER)
 * to one end of an AF_UNIX datagram socket pair, the packet sent from the other. The kernel runs the
 * filter on the datagram's bytes as it runs it on a netlink notification's, and tosses what it
 * rejects without telling the sender. No privilege needed. The unit tests check every vector they
 * give the reference interpreter (classic-bpf.ts) here too, so a rule the two share wrongly shows.
 */

const SOCK_DGRAM = 2;
const EAGAIN = 11;

function pair(): [number, number] {
  const r = getLibc().socketpair(AF_UNIX, SOCK_DGRAM, 0);
  if (!Array.isArray(r)) throw new Error(`socketpair failed: errno ${r.errno}`);
  return r;
}

/** 'accepted' when the kernel delivered the packet through the filter, 'rejected' when it tossed it. */
export function kernelVerdict(program: Buffer, packet: Buffer): 'accepted' | 'rejected' {
  const libc = getLibc();
  const [sender, receiver] = pair();
  try {
    const attached = libc.attachFilter(receiver, program);
    if (attached.value !== 0) throw new Error(`the kernel refused the program: errno ${attached.errno}`);
    const sent = libc.send(sender, packet);
    if (sent.value !== packet.length) throw new Error(`send: ${sent.value}, errno ${sent.errno}`);
    const got = libc.recv(receiver, Buffer.alloc(packet.length + 1), MSG_DONTWAIT);
    if (got.value >= 0) return 'accepted';
    if (got.errno === EAGAIN) return 'rejected';
    throw new Error(`recv: errno ${got.errno}`);
  } finally {
    closeSync(sender);
    closeSync(receiver);
  }
}
