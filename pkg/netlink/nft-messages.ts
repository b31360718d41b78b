/**
 * nf_tables change notifications (NETLINK_NETFILTER, group NFNLGRP_NFTABLES), parsed only as far as
 * "which object of which table changed": the agent watches its masquerade table, and a transaction
 * ends with a NEWGEN message. Layout: nlmsghdr, then struct nfgenmsg (family u8, version u8, res_id
 * be16), then attributes; every table-scoped object carries its table's name as attribute 1
 * (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, ...; linux/netfilter/nf_tables.h).
 */
import { endianness } from 'node:os';
import type { NftablesEvent, NftObjectKind } from '../datapath/ports.ts';
import type { SkipRule } from './skip-filter.ts';
import { NLMSG_HDRLEN } from './socket-filter.ts';
import { NLA_TYPE_MASK, u8, u16le } from './wire.ts';

/** NFNLGRP_NFTABLES. */
export const NFNLGRP_NFTABLES = 7;
/** NFNL_SUBSYS_NFTABLES: the high byte of the message type. */
const SUBSYS_NFTABLES = 10;
const NFGENMSG_LEN = 4;
const ATTR_TABLE = 1;

/** enum nf_tables_msg_types, the ones that name a table (GET* never come as notifications). */
const OBJECTS: Record<number, { change: 'new' | 'del'; object: NftObjectKind }> = {
  0: { change: 'new', object: 'table' },
  2: { change: 'del', object: 'table' },
  3: { change: 'new', object: 'chain' },
  5: { change: 'del', object: 'chain' },
  6: { change: 'new', object: 'rule' },
  8: { change: 'del', object: 'rule' },
  9: { change: 'new', object: 'set' },
  11: { change: 'del', object: 'set' },
  12: { change: 'new', object: 'element' },
  14: { change: 'del', object: 'element' },
  18: { change: 'new', object: 'object' },
  20: { change: 'del', object: 'object' },
  22: { change: 'new', object: 'flowtable' },
  24: { change: 'del', object: 'flowtable' },
};
/** NFT_MSG_NEWGEN: a transaction was committed; its notifications came before this one. */
const NEWGEN = 15;

/**
 * undefined for messages of other subsystems or types, and for objects without a table name.
 * portid: the nlmsg_pid the kernel put on it, the netlink port of the process whose transaction it was.
 */
export function parseNftablesMessage(type: number, payload: Buffer, portid = 0): NftablesEvent | undefined {
  if (type >> 8 !== SUBSYS_NFTABLES) return undefined;
  const msg = type & 0xff;
  if (msg === NEWGEN) return { type: 'generation', portid };
  const kind = OBJECTS[msg];
  if (kind === undefined || payload.length < NFGENMSG_LEN) return undefined;
  const family = u8(payload, 0);
  for (let off = NFGENMSG_LEN; off + 4 <= payload.length; ) {
    const len = u16le(payload, off);
    if (len < 4 || off + len > payload.length) break;
    if ((u16le(payload, off + 2) & NLA_TYPE_MASK) === ATTR_TABLE) {
      let end = off + len;
      while (end > off + 4 && payload[end - 1] === 0) end--; // NUL-terminated string
      return { type: 'change', ...kind, family, table: payload.toString('utf8', off + 4, end), portid };
    }
    off += (len + 3) & ~3;
  }
  return undefined;
}

/**
 * The socket filter's rule (skip-filter.ts): a datagram made only of other tables' set element
 * changes (kube-proxy's and firewalld's churn) is dropped before it reaches the agent; any datagram
 * with another message (a commit, a change of any object but an element, an element of our table) is
 * kept whole. The kernel coalesces a transaction's notifications into few datagrams, so the filter
 * walks each datagram's messages: a `flush ruleset` that deletes another table first, or one
 * transaction that changes another table's elements and then our table, still arrives.
 */
export function nftablesSkipRule(family: number, name: string): SkipRule {
  const at = NLMSG_HDRLEN + NFGENMSG_LEN; // the first attribute's header: len u16, type u16 (host order)
  const nameBytes = [...Buffer.from(`${name}\0`, 'utf8')];
  const type = (msg: number): number => (SUBSYS_NFTABLES << 8) | msg;
  return {
    types: Object.entries(OBJECTS).flatMap(([msg, kind]) =>
      kind.object === 'element' ? [type(Number(msg))] : [],
    ),
    unless: [
      { offset: NLMSG_HDRLEN, value: family },
      ...u16HostBytes(ATTR_TABLE).map((value, i) => ({ offset: at + 2 + i, value })),
      ...nameBytes.map((value, i) => ({ offset: at + 4 + i, value })),
    ],
  };
}

function u16HostBytes(v: number): number[] {
  const b = Buffer.alloc(2);
  if (endianness() === 'LE') b.writeUInt16LE(v);
  else b.writeUInt16BE(v);
  return [b[0]!, b[1]!];
}
