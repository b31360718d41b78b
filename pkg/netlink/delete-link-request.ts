import { NLM_F, NLMSG_ERROR, RTM } from './constants.ts';
import { errorFromErrno, NetlinkError } from './errors.ts';
import { ifinfomsg } from './messages.ts';
import { decodeErrno, decodeMessages, encodeMessage } from './wire.ts';

/** Sends one request datagram and returns the kernel's reply datagram (pkg/netns off-thread socket). */
export type Exchange = (request: Buffer) => Promise<Buffer>;

let seq = 0x40000000; // apart from the sequence numbers of the agent's other sockets, for clearer traces

/**
 * RTM_DELLINK by index over `exchange`, with the same typed errors as the handle's deleteLink
 * (LinkNotFoundError for ENODEV). Used for veth deletion, which the kernel takes 15-33 ms for.
 */
export async function deleteLinkVia(exchange: Exchange, index: number): Promise<void> {
  const op = `RTM_DELLINK #${index}`;
  seq = (seq + 1) >>> 0;
  const mine = seq;
  const reply = await exchange(
    encodeMessage(RTM.DELLINK, NLM_F.REQUEST | NLM_F.ACK, mine, [ifinfomsg(index)]),
  );
  const ack = decodeMessages(reply).find((m) => m.type === NLMSG_ERROR && m.seq === mine);
  if (ack === undefined) throw new NetlinkError('EPROTO', `${op}: no acknowledgement in the reply`);
  const errno = decodeErrno(ack.payload);
  if (errno !== 0) throw errorFromErrno(errno, op);
}
