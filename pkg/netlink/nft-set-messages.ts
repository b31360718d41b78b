/**
 * nf_tables set element messages (linux/netfilter/nf_tables.h, nfnetlink.h): adding and deleting
 * ranges of an interval set in one transaction, without spawning nft. Pure encoders.
 *
 * A transaction is a batch: NFNL_MSG_BATCH_BEGIN, the changes, NFNL_MSG_BATCH_END, in one
 * datagram; the kernel commits all of it or none. Every message starts with struct nfgenmsg
 * (family u8, version u8, res_id be16). An interval set holds a range [lo, hi] as two elements: the
 * start (key lo) and an end (key hi + 1, flagged NFT_SET_ELEM_INTERVAL_END), exactly what nft sends
 * for `add element`; a range reaching the top of the address space has no end element, and its
 * start carries nft's "open interval" user data so that `nft list` prints it as nft would.
 */
import type { Family, IntervalSetChange } from '../datapath/ports.ts';
import { ipValueToBytes } from './ip.ts';
import { attr, nested, strAttr } from './wire.ts';

/** NFNL_SUBSYS_NFTABLES: the high byte of an nf_tables message type. */
const SUBSYS_NFTABLES = 10;
export const NFNL_MSG_BATCH_BEGIN = 16;
export const NFNL_MSG_BATCH_END = 17;
export const NFT_MSG_NEWSETELEM = (SUBSYS_NFTABLES << 8) | 12;
export const NFT_MSG_DELSETELEM = (SUBSYS_NFTABLES << 8) | 14;
const NFPROTO_INET = 1;
const NLA_F_NESTED = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_FLAGS = 3;
const NFTA_SET_ELEM_USERDATA = 6;
const NFTA_DATA_VALUE = 1;
const NFT_SET_ELEM_INTERVAL_END = 1;
/** libnftnl's NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN, as a TLV (type, len, u32). */
const OPEN_INTERVAL_UDATA = Buffer.from([1, 4, 1, 0, 0, 0]);
/** Ranges per message: an attribute's length is a u16, and 512 IPv6 ranges take ~37 KB. */
const RANGES_PER_MESSAGE = 512;

/** One element of an interval set as the kernel stores it. */
export interface IntervalElement {
  /** The address in network byte order (4 or 16 bytes). */
  key: Buffer;
  /** An interval end (the first address after a range). */
  end: boolean;
  /** A start whose range runs to the top of the address space (it has no end element). */
  open: boolean;
}

/** struct nfgenmsg: family, version NFNETLINK_V0, res_id (big-endian). */
export function nfgenmsg(family: number, resId: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt16BE(resId, 2);
  return b;
}

/** The body of NFNL_MSG_BATCH_BEGIN / _END: the subsystem the batch is for. */
export function batchBody(): Buffer[] {
  return [nfgenmsg(0, SUBSYS_NFTABLES)];
}

/** The kernel elements of inclusive ranges [lo, hi] of one family. */
export function intervalElements(
  family: Family,
  ranges: readonly (readonly [bigint, bigint])[],
): IntervalElement[] {
  const max = (1n << (family === 4 ? 32n : 128n)) - 1n;
  const out: IntervalElement[] = [];
  for (const [lo, hi] of ranges) {
    const open = hi === max;
    out.push({ key: ipValueToBytes(family, lo), end: false, open });
    if (!open) out.push({ key: ipValueToBytes(family, hi + 1n), end: true, open: false });
  }
  return out;
}

/** The body of NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM for elements of set `set` in table inet `table`. */
export function setElementsBody(table: string, set: string, elements: readonly IntervalElement[]): Buffer[] {
  const list = elements.map((e) => {
    const parts = [nested(NFTA_SET_ELEM_KEY | NLA_F_NESTED, [attr(NFTA_DATA_VALUE, e.key)])];
    if (e.end) {
      const flags = Buffer.alloc(4);
      flags.writeUInt32BE(NFT_SET_ELEM_INTERVAL_END);
      parts.push(attr(NFTA_SET_ELEM_FLAGS, flags));
    }
    if (e.open) parts.push(attr(NFTA_SET_ELEM_USERDATA, OPEN_INTERVAL_UDATA));
    return nested(NFTA_LIST_ELEM | NLA_F_NESTED, parts);
  });
  return [
    nfgenmsg(NFPROTO_INET, 0),
    strAttr(NFTA_SET_ELEM_LIST_TABLE, table),
    strAttr(NFTA_SET_ELEM_LIST_SET, set),
    nested(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, list),
  ];
}

/** The element messages of a transaction: every removal before any addition (a range may be re-added wider). */
export function setChangeMessages(
  table: string,
  changes: readonly IntervalSetChange[],
): { type: number; body: Buffer[]; op: string }[] {
  const out: { type: number; body: Buffer[]; op: string }[] = [];
  for (const kind of ['remove', 'add'] as const) {
    for (const c of changes) {
      for (let i = 0; i < c[kind].length; i += RANGES_PER_MESSAGE) {
        const ranges = c[kind].slice(i, i + RANGES_PER_MESSAGE);
        out.push({
          type: kind === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM,
          body: setElementsBody(table, c.set, intervalElements(c.family, ranges)),
          op: `${kind === 'add' ? 'NFT_MSG_NEWSETELEM' : 'NFT_MSG_DELSETELEM'} inet ${table} ${c.set} (${ranges.length} ranges)`,
        });
      }
    }
  }
  return out;
}
