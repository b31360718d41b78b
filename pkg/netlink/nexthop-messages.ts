import type { Family } from '../datapath/ports.ts';
import { AF, NHA, RTNH_F_ONLINK } from './constants.ts';
import { bytesToIp, familyOf, ipToBytes, ipv4Value } from './ip.ts';
import { rememberIpv4Value } from './ipv4-texts.ts';
import type { Body } from './messages.ts';
import {
  decodeAttrs,
  putAttrHeader,
  putU32Attr,
  putU32be,
  putU32le,
  u8,
  u32Attr,
  u32AttrIn,
  u32le,
  zeroed,
} from './wire.ts';

/**
 * Nexthop objects (RTM_NEWNEXTHOP, Linux 5.3+), single-path only: what trellis writes for its
 * inter-node routes and what it needs to read back.
 */

export interface NexthopInfo {
  id: number;
  /** Undefined for groups and blackholes (AF_UNSPEC): trellis only notes that their id is taken. */
  family?: Family;
  gateway?: string;
  ifindex?: number;
  onlink?: boolean;
  protocol: number;
}

/** struct nhmsg (8 bytes): family, scope, protocol, reserved, flags. */
function nhmsg(af: number, protocol: number, flags: number): Buffer {
  const b = Buffer.alloc(8);
  writeNhmsg(b, af, protocol, flags);
  return b;
}

function writeNhmsg(b: Buffer, af: number, protocol: number, flags: number): void {
  b[0] = af;
  b[2] = protocol;
  putU32le(b, 4, flags);
}

/**
 * RTM_NEWNEXTHOP body: one gateway on one device (onlink: no connected route needed, VXLAN). One
 * buffer, written in place: a cold pass at 5,000 nodes encodes 5,000 of them.
 */
export function nexthopBody(nh: NexthopInfo & { family: Family; gateway: string; ifindex: number }): Body {
  const v4 = nh.family === 4 ? ipv4Value(nh.gateway) : -1;
  if (nh.family === 4 ? v4 < 0 : familyOf(nh.gateway) !== 6) {
    throw new TypeError(`gateway ${nh.gateway} is not IPv${nh.family}`);
  }
  // A route dump names the gateway of a route through this object: read back as this string.
  rememberIpv4Value(v4, nh.gateway);
  const alen = nh.family === 4 ? 4 : 16;
  const out = zeroed(8 + 8 + 4 + alen + 8);
  writeNhmsg(out, nh.family === 4 ? AF.INET : AF.INET6, nh.protocol, nh.onlink === true ? RTNH_F_ONLINK : 0);
  let off = 8;
  off = putU32Attr(out, off, NHA.ID, nh.id);
  putAttrHeader(out, off, 4 + alen, NHA.GATEWAY);
  if (v4 >= 0) putU32be(out, off + 4, v4);
  else out.set(ipToBytes(nh.gateway), off + 4);
  off += 4 + alen;
  putU32Attr(out, off, NHA.OIF, nh.ifindex);
  return [out];
}

/** RTM_DELNEXTHOP body: the id is the whole key. */
export function deleteNexthopBody(id: number): Body {
  return [nhmsg(AF.UNSPEC, 0, 0), u32Attr(NHA.ID, id)];
}

/** RTM_GETNEXTHOP body for one object (no dump): the id is the whole key. */
export function getNexthopBody(id: number): Body {
  return [nhmsg(AF.UNSPEC, 0, 0), u32Attr(NHA.ID, id)];
}

/**
 * The member ids of a group object (NHA_GROUP: struct nexthop_grp { u32 id; u8 weight; u8; u16; }
 * each), in its order; undefined for any other object. Members are single nexthops: the kernel
 * refuses groups of groups.
 */
export function nexthopGroupMembers(payload: Buffer): number[] | undefined {
  const group = decodeAttrs(payload, 8).get(NHA.GROUP);
  if (group === undefined) return undefined;
  const ids: number[] = [];
  for (let off = 0; off + 8 <= group.length; off += 8) ids.push(u32le(group, off));
  return ids;
}

export function dumpNexthopsBody(): Body {
  return [nhmsg(AF.UNSPEC, 0, 0)];
}

/**
 * An object's id and protocol, read without decoding its other attributes (parseNexthop's, for a
 * dump that needs no more: the prune's, of every object at every pass); undefined without an id.
 */
export function nexthopIdAndProtocol(payload: Buffer): { id: number; protocol: number } | undefined {
  const id = u32AttrIn(payload, 8, payload.length, NHA.ID);
  return id === undefined ? undefined : { id, protocol: u8(payload, 2) };
}

export function parseNexthop(payload: Buffer): NexthopInfo | undefined {
  const a = decodeAttrs(payload, 8);
  const id = a.get(NHA.ID);
  if (id === undefined) return undefined;
  const nh: NexthopInfo = { id: u32le(id, 0), protocol: u8(payload, 2) };
  if (a.has(NHA.GROUP) || a.has(NHA.BLACKHOLE)) return nh;
  const af = u8(payload, 0);
  if (af === AF.INET) nh.family = 4;
  else if (af === AF.INET6) nh.family = 6;
  const gw = a.get(NHA.GATEWAY);
  if (gw !== undefined) nh.gateway = bytesToIp(gw);
  const oif = a.get(NHA.OIF);
  if (oif !== undefined) nh.ifindex = u32le(oif, 0);
  if ((u32le(payload, 4) & RTNH_F_ONLINK) !== 0) nh.onlink = true;
  return nh;
}
