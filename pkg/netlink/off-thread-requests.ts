import type { CreateVeth, LinkInfo } from '../datapath/ports.ts';
import { NLM_F, NLMSG_ERROR, RTM } from './constants.ts';
import { errorFromErrno, NetlinkError } from './errors.ts';
import { createVethBody, ifinfomsg, parseLink } from './messages.ts';
import { decodeErrno, decodeMessages, encodeMessage, type RawMessage } from './wire.ts';

/**
 * The link requests the kernel takes milliseconds over (inside the sending call), encoded here and
 * sent through `exchange`, which pkg/netns implements with a socket sent from another thread so the
 * agent's JS thread keeps serving meanwhile. Same typed errors as the handle's own methods.
 */

/**
 * Sends one request datagram and returns the kernel's reply: every datagram it queued for the
 * request, up to and including the one with the ACK, concatenated (pkg/netns off-thread socket).
 */
export type Exchange = (request: Buffer) => Promise<Buffer>;

/** linux/netlink.h: unicast the notification of what the request changed back to the sender too. */
const NLM_F_ECHO = 0x8;

let seq = 0x40000000; // apart from the sequence numbers of the agent's other sockets, for clearer traces

async function requestVia(
  exchange: Exchange,
  type: number,
  flags: number,
  body: readonly Uint8Array[],
  op: string,
): Promise<RawMessage[]> {
  seq = (seq + 1) >>> 0;
  const mine = seq;
  const reply = decodeMessages(
    await exchange(encodeMessage(type, NLM_F.REQUEST | NLM_F.ACK | flags, mine, body)),
  );
  const ack = reply.find((m) => m.type === NLMSG_ERROR && m.seq === mine);
  if (ack === undefined) throw new NetlinkError('EPROTO', `${op}: no acknowledgement in the reply`);
  const errno = decodeErrno(ack.payload);
  if (errno !== 0) throw errorFromErrno(errno, op);
  // The socket joins no groups and carries one request at a time: everything else is this one's.
  return reply.filter((m) => m !== ack);
}

/** RTM_DELLINK by index (LinkNotFoundError for ENODEV). A veth pair: 15-33 ms in the kernel here. */
export async function deleteLinkVia(exchange: Exchange, index: number): Promise<void> {
  await requestVia(exchange, RTM.DELLINK, 0, [ifinfomsg(index)], `RTM_DELLINK #${index}`);
}

/**
 * A veth pair, the peer created in another namespace (ExistsError for EEXIST): ~1 ms in the kernel
 * per pair here, most of a pod ADD's time on the JS thread before. spec.peerNetnsFd must stay open
 * until the promise settles.
 *
 * NLM_F_ECHO makes the kernel (6.3+) send the new link back with the ACK, in the same send: its
 * index and MAC, and the peer's index (IFLA_LINK). With spec.peerMac set as well, a caller knows
 * both ends without asking the kernel again (one round trip per side on the ADD path). Resolves
 * with nothing where the kernel does not echo.
 */
export async function createVethVia(exchange: Exchange, spec: CreateVeth): Promise<LinkInfo | undefined> {
  const reply = await requestVia(
    exchange,
    RTM.NEWLINK,
    NLM_F.CREATE | NLM_F.EXCL | NLM_F_ECHO,
    createVethBody(spec),
    `RTM_NEWLINK veth ${spec.name} peer ${spec.peerName}`,
  );
  for (const m of reply) {
    if (m.type !== RTM.NEWLINK) continue;
    const link = parseLink(m.payload);
    if (link.name === spec.name) return link;
  }
  return undefined;
}
