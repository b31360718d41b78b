import type { CreateVeth } from '../datapath/ports.ts';
import { NLM_F, NLMSG_ERROR, RTM } from './constants.ts';
import { errorFromErrno, NetlinkError } from './errors.ts';
import { createVethBody, ifinfomsg } from './messages.ts';
import { decodeErrno, decodeMessages, encodeMessage } from './wire.ts';

/**
 * The link requests the kernel takes milliseconds over (inside the sending call), encoded here and
 * sent through `exchange`, which pkg/netns implements with a socket sent from another thread so the
 * agent's JS thread keeps serving meanwhile. Same typed errors as the handle's own methods.
 */

/** Sends one request datagram and returns the kernel's reply datagram (pkg/netns off-thread socket). */
export type Exchange = (request: Buffer) => Promise<Buffer>;

let seq = 0x40000000; // apart from the sequence numbers of the agent's other sockets, for clearer traces

async function requestVia(
  exchange: Exchange,
  type: number,
  flags: number,
  body: readonly Uint8Array[],
  op: string,
): Promise<void> {
  seq = (seq + 1) >>> 0;
  const mine = seq;
  const reply = await exchange(encodeMessage(type, NLM_F.REQUEST | NLM_F.ACK | flags, mine, body));
  const ack = decodeMessages(reply).find((m) => m.type === NLMSG_ERROR && m.seq === mine);
  if (ack === undefined) throw new NetlinkError('EPROTO', `${op}: no acknowledgement in the reply`);
  const errno = decodeErrno(ack.payload);
  if (errno !== 0) throw errorFromErrno(errno, op);
}

/** RTM_DELLINK by index (LinkNotFoundError for ENODEV). A veth pair: 15-33 ms in the kernel here. */
export function deleteLinkVia(exchange: Exchange, index: number): Promise<void> {
  return requestVia(exchange, RTM.DELLINK, 0, [ifinfomsg(index)], `RTM_DELLINK #${index}`);
}

/**
 * A veth pair, the peer created in another namespace (ExistsError for EEXIST): ~2.4 ms in the
 * kernel per pair here, most of a pod ADD's time on the JS thread before. spec.peerNetnsFd must
 * stay open until the promise settles.
 */
export function createVethVia(exchange: Exchange, spec: CreateVeth): Promise<void> {
  return requestVia(
    exchange,
    RTM.NEWLINK,
    NLM_F.CREATE | NLM_F.EXCL,
    createVethBody(spec),
    `RTM_NEWLINK veth ${spec.name} peer ${spec.peerName}`,
  );
}
