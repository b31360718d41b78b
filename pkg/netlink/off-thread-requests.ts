import type {
  CreateVeth,
  LinkInfo,
  RouteFilter,
  RouteInfo,
  SetUpOutcome,
  SetUpStep,
} from '../datapath/ports.ts';
import { NLM_F, NLMSG_DONE, NLMSG_ERROR, RT_TABLE_LOCAL, RT_TABLE_MAIN, RTM } from './constants.ts';
import { errorFromErrno, LinkNotFoundError, NetlinkError, opText } from './errors.ts';
import {
  createVethBody,
  dumpRoutesBody,
  getLinkByNameBody,
  ifinfomsg,
  parseLink,
  parseRoute,
} from './messages.ts';
import { setUpOutcomes, setUpRequest } from './requests.ts';
import { decodeErrno, decodeMessages, encodeMessage, type RawMessage } from './wire.ts';

/**
 * Requests over a plain socket that pkg/netns sends from another thread (the link requests the kernel
 * takes milliseconds over, so the agent's JS thread keeps serving meanwhile) or on the JS thread with
 * the answer read at once (a pod's configuration). Same typed errors as the handle's own methods.
 */

/**
 * Sends one request datagram and returns the kernel's reply: every datagram it queued for the
 * request, up to and including the one acknowledging its last message, concatenated (pkg/netns
 * off-thread-netlink.ts).
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
  // The socket joins no groups and carries one request at a time; a reply an earlier exchange left
  // unread (a recv cut short) is still not this one's: by its sequence number, the echo's too.
  return reply.filter((m) => m !== ack && m.seq === mine);
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

/** RTM_GETLINK by name; undefined when there is no such link. */
export async function getLinkVia(exchange: Exchange, name: string): Promise<LinkInfo | undefined> {
  try {
    const reply = await requestVia(exchange, RTM.GETLINK, 0, getLinkByNameBody(name), `RTM_GETLINK ${name}`);
    for (const m of reply) if (m.type === RTM.NEWLINK) return parseLink(m.payload);
    return undefined;
  } catch (e) {
    if (e instanceof LinkNotFoundError) return undefined;
    throw e;
  }
}

/** Dumps started again when the kernel flags one as interrupted (the table changed meanwhile). */
const MAX_DUMP_RETRIES = 5;

/**
 * One dump: the entries the kernel sent before its NLMSG_DONE (whose payload carries a failed dump's
 * errno). Started again when an entry carries NLM_F_DUMP_INTR: the table changed while it was read.
 */
async function dumpVia(
  exchange: Exchange,
  type: number,
  body: readonly Uint8Array[],
  op: string,
): Promise<RawMessage[]> {
  for (let attempt = 0; ; attempt++) {
    seq = (seq + 1) >>> 0;
    const mine = seq;
    // No NLM_F_ACK: a dump ends with NLMSG_DONE (an error before it starts, with NLMSG_ERROR).
    const reply = decodeMessages(await exchange(encodeMessage(type, NLM_F.REQUEST | NLM_F.DUMP, mine, body)));
    const entries: RawMessage[] = [];
    let done = false;
    let interrupted = false;
    for (const m of reply) {
      if (m.seq !== mine) continue;
      if (m.type === NLMSG_DONE || m.type === NLMSG_ERROR) {
        const errno = decodeErrno(m.payload);
        if (errno !== 0) throw errorFromErrno(errno, op);
        // The kernel checks consistency on DONE too: a change after the last entries marks only it.
        if (m.type === NLMSG_DONE && (m.flags & NLM_F.DUMP_INTR) !== 0) interrupted = true;
        done = true;
        break;
      }
      if ((m.flags & NLM_F.DUMP_INTR) !== 0) interrupted = true;
      entries.push(m);
    }
    if (!done) throw new NetlinkError('EPROTO', `${op}: no NLMSG_DONE in the reply`);
    if (!interrupted) return entries;
    if (attempt >= MAX_DUMP_RETRIES) throw new NetlinkError('EINTR', op);
  }
}

/**
 * NetlinkHandle.listRoutes in one dump (both families' when the filter names none), the table,
 * protocol and device filtered here: the kernel ignores most dump filters without
 * NETLINK_GET_STRICT_CHK. Meant for a pod's namespace, whose few routes come in one datagram (more
 * are read on to the end, every one parsed on the JS thread). Unlike the handle's, a route on a
 * nexthop object that the kernel shows by id only (nexthop_compat_mode=0) comes without the gateway
 * and device the object holds.
 */
export async function listRoutesVia(exchange: Exchange, filter: RouteFilter = {}): Promise<RouteInfo[]> {
  const table = filter.table ?? RT_TABLE_MAIN;
  const out: RouteInfo[] = [];
  for (const m of await dumpVia(exchange, RTM.GETROUTE, dumpRoutesBody(filter.family), 'RTM_GETROUTE dump')) {
    if (m.type !== RTM.NEWROUTE) continue;
    const r = parseRoute(m.payload, undefined, filter.unreadable === true);
    if (r === undefined) continue;
    const t = r.table ?? RT_TABLE_MAIN;
    if (table === 'routing' ? t === RT_TABLE_LOCAL : t !== table) continue;
    if (filter.protocol !== undefined && r.protocol !== filter.protocol) continue;
    if (filter.ifindex !== undefined && r.ifindex !== filter.ifindex) continue;
    out.push(r);
  }
  return out;
}

/**
 * NetlinkHandle.setUp in one datagram: the kernel applies the steps in order and keeps going after a
 * failed one, answering it with its error; only the last step asks for an ACK, which then proves
 * every earlier step without an error succeeded. An address that exists counts as added, a
 * keepExisting route whose destination is taken as kept. Throws the first failure.
 */
export async function setUpVia(exchange: Exchange, steps: readonly SetUpStep[]): Promise<SetUpOutcome[]> {
  if (steps.length === 0) return [];
  const requests = steps.map(setUpRequest);
  const first = (seq + 1) >>> 0;
  seq = (seq + requests.length) >>> 0;
  const datagram = Buffer.concat(
    requests.map((r, i) =>
      encodeMessage(
        r.type,
        NLM_F.REQUEST | (i === requests.length - 1 ? NLM_F.ACK : 0) | r.flags,
        (first + i) >>> 0,
        r.body,
      ),
    ),
  );
  const results = new Array<NetlinkError | undefined>(requests.length);
  let acked = false;
  for (const m of decodeMessages(await exchange(datagram))) {
    const i = (m.seq - first) >>> 0;
    if (m.type !== NLMSG_ERROR || i >= requests.length) continue;
    if (i === requests.length - 1) acked = true;
    const errno = decodeErrno(m.payload);
    if (errno !== 0) results[i] = errorFromErrno(errno, opText(requests[i]!.op));
  }
  const outcomes = setUpOutcomes(steps, results);
  if (!acked)
    throw new NetlinkError('EPROTO', `${opText(requests.at(-1)!.op)}: no acknowledgement in the reply`);
  return outcomes;
}
